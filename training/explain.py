"""Reason codes a teller can read: TreeSHAP contributions grouped by the reviewed catalogue.

A score alone tells branch staff nothing to check. Each scored row gets up to
``top_k`` reasons: the catalogue codes (``training/reasons.toml``) whose
features together raise the risk most, each as a sentence in Chinese and
English filled with the applicant's actual values. Features of one code share
a slot, so the 7-day and 30-day counts of the same escort are one reason, not
two. Only contributions that raise the risk become reasons: what lowers a
score is not something to check.

Contributions are LightGBM's own TreeSHAP (``pred_contrib=True``), identical to
``shap.TreeExplainer`` and computed once per call; they are log-odds on the
booster's margin and, with the base value in the last column, add up to it.
"""

from __future__ import annotations

import math
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duanka.features.registry import BY_NAME
from duanka.training.bundle import FEW_ROWS, ScoringBundle

CATALOGUE_PATH = Path(__file__).with_name("reasons.toml")
NONE_TEXT = {"zh": "无", "en": "none"}
LANGUAGES = ("zh", "en")
# English nouns the templates count, for "1 branch" rather than "1 branches".
_SINGULAR = {
    "accounts": "account",
    "addresses": "address",
    "applicants": "applicant",
    "applications": "application",
    "branches": "branch",
    "companies": "company",
    "days": "day",
    "escorts": "escort",
    "intermediaries": "intermediary",
    "listings": "listing",
    "openings": "opening",
    "provinces": "province",
}
_ONE_OF_MANY = re.compile(r"\b1 ((?:different |other |corporate )?)(" + "|".join(_SINGULAR) + r")\b")
# shown_if: "<feature> <op> <number>" joined by " or "; each becomes an open interval (lo, hi)
_BOUNDS = {
    ">": lambda t: (t, math.inf),
    ">=": lambda t: (math.nextafter(t, -math.inf), math.inf),
    "<": lambda t: (-math.inf, t),
    "<=": lambda t: (-math.inf, math.nextafter(t, math.inf)),
    "==": lambda t: (math.nextafter(t, -math.inf), math.nextafter(t, math.inf)),
}
_APPLIES_TO = {"corporate": "corporate == 1", "personal": "corporate == 0"}


@dataclass(frozen=True)
class Reason:
    """One reason a row's risk is raised.

    Attributes
    ----------
    code : str
        Stable catalogue code, e.g. ``"ESC_VELOCITY"``.
    family : str
        Feature family of the code (:class:`duanka.features.registry.Family` value).
    feature : str
        The code's feature with the largest contribution on this row.
    value : float
        That feature's value on this row (NaN when the entity is absent).
    contribution : float
        Summed TreeSHAP contribution of the code's features, in log-odds; positive.
    text_zh, text_en : str
        The catalogue sentence filled with this row's values.
    """

    code: str
    family: str
    feature: str
    value: float
    contribution: float
    text_zh: str
    text_en: str


def load_catalogue(path: Path = CATALOGUE_PATH) -> dict:
    """The parsed reason catalogue: ``{"codes": {code: {...}}, "labels": {feature: {...}}}``."""
    with path.open("rb") as handle:
        return tomllib.load(handle)


def placeholders(template: str) -> tuple[str, ...]:
    """Feature names a template fills, in order of appearance."""
    return tuple(field for _, field, _, _ in string.Formatter().parse(template) if field)


def format_value(feature: str, value: float, language: str, labels: dict | None = None) -> str:
    """A value as a teller reads it, like :meth:`duanka.features.registry.Feature.describe`.

    Catalogue labels (flags, categories) win over the registry's category codes; shares read
    as percentages and differences of shares as percentage points; NaN means the application
    has no such entity, shown as 无 / none.
    """
    value = float(value)
    if math.isnan(value):
        return NONE_TEXT[language]
    if labels and value.is_integer() and 0 <= value < len(labels[language]):
        return str(labels[language][int(value)])
    return BY_NAME[feature].shown(value, language)


@dataclass(frozen=True)
class _Code:
    name: str
    family: str
    members: np.ndarray  # positions in the bundle's feature order
    templates: dict[str, str]
    fields: tuple[tuple[str, int], ...]  # (placeholder, position) the templates read


class ReasonExplainer:
    """Top reasons per row for one bundle; load once, call per request or per batch.

    Parameters
    ----------
    bundle : ScoringBundle
        The verified model; its feature order is the column order of ``X``.
    top_k : int
        Most reasons per row; fewer when fewer codes raise the risk.

    Raises
    ------
    ValueError
        A bundle feature is in no catalogue code, or in several, or a template of
        a code the bundle uses names something that is not a bundle feature.
    """

    def __init__(self, bundle: ScoringBundle, top_k: int = 3) -> None:
        self.bundle = bundle
        self.top_k = top_k
        catalogue = load_catalogue()
        self._labels: dict[str, dict] = catalogue.get("labels", {})
        position = {name: i for i, name in enumerate(bundle.feature_names)}
        owner = np.full(len(position), -1)
        codes: list[_Code] = []
        shown_if: list[list[tuple[int, float, float]]] = []
        applies: list[tuple[int, int, float, float]] = []
        for name, spec in catalogue["codes"].items():
            members = np.array([position[f] for f in spec["features"] if f in position], dtype=int)
            if members.size == 0:
                # an older or ablated model without this code's features: it can never fire
                continue
            taken = [bundle.feature_names[m] for m in members if owner[m] >= 0]
            if taken:
                raise ValueError(f"features {taken} belong to more than one reason code ({name})")
            owner[members] = len(codes)
            templates = {language: spec[language] for language in LANGUAGES}
            fields = tuple(dict.fromkeys(p for t in templates.values() for p in placeholders(t)))
            missing = [f for f in fields if f not in position]
            if missing:
                raise ValueError(f"reason code {name} reads features the model lacks: {missing}")
            codes.append(
                _Code(name, spec["family"], members, templates, tuple((f, position[f]) for f in fields))
            )
            default = " or ".join(f"{bundle.feature_names[m]} > 0" for m in members)
            shown_if.append(_conditions(name, spec.get("shown_if", default), position))
            if "applies_to" in spec:
                (condition,) = _conditions(name, _APPLIES_TO[spec["applies_to"]], position)
                applies.append((len(codes) - 1, *condition))
        orphans = [bundle.feature_names[i] for i in np.flatnonzero(owner < 0)]
        if orphans:
            raise ValueError(f"model features without a reason code: {orphans}")
        self._codes = codes
        # The features in code order and where each code's run starts: one reduceat sums every
        # code's contributions row by row, in an order that does not depend on how many rows are
        # explained together (a BLAS product's does, so a request's one row would not get batch's
        # reasons to the last bit; a per-feature Python loop costs 80 us a row).
        self._by_code = np.argsort(owner, kind="stable")
        self._code_starts = np.searchsorted(owner[self._by_code], np.arange(len(codes)))
        # feature x code indicator: which codes have a known feature on a row
        self._membership = np.zeros((len(position), len(codes)))
        self._membership[np.arange(len(position)), owner] = 1.0
        # What a code must see to say something, as open intervals (lo, hi) over feature values,
        # in code order: any of a code's shown_if conditions, and its applies_to condition.
        flat = [c for conditions in shown_if for c in conditions]
        self._shown_at, self._shown_lo, self._shown_hi = (
            np.array(column) for column in zip(*flat, strict=True)
        )
        self._shown_starts = np.cumsum([0, *map(len, shown_if)])[:-1]
        self._applies = tuple(np.array(column) for column in zip(*applies, strict=True)) if applies else None

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, list[list[Reason]]]:
        """Contributions (base value in the last column) and reasons for each row of ``X``."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        # OpenMP threads cost more than they save on a request's few rows, and on a busy
        # machine spin-waiting turns ~1 ms into ~10 ms; batches keep every thread.
        threads = 1 if X.shape[0] < FEW_ROWS else 0
        contrib = self.bundle.booster.predict(X, pred_contrib=True, num_threads=threads)
        return contrib, self.reasons_from_contributions(X, contrib)

    def reasons_from_contributions(self, X: np.ndarray, contrib: np.ndarray) -> list[list[Reason]]:
        """Reasons from contributions already computed (batch scoring, reports).

        Codes are ranked by summed contribution, largest first; ties keep catalogue
        order, so the same row always gets the same reasons.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        phi = np.atleast_2d(contrib)[:, : X.shape[1]]
        # A code whose features are all missing (no staff on a self-service opening, say) has no
        # sentence a teller could read: its contribution stays in the score but not in the reasons.
        known = ~np.isnan(X)
        summed = np.add.reduceat(phi[:, self._by_code], self._code_starts, axis=1)
        grouped = np.where(
            (known.astype(float) @ self._membership > 0) & self._says_something(X), summed, -np.inf
        )
        k = min(self.top_k, grouped.shape[1])
        order = np.argsort(-grouped, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(grouped, order, axis=1)
        rows, slots = np.nonzero(top > 0)
        reasons: list[list[Reason]] = [[] for _ in range(X.shape[0])]
        for row, slot in zip(rows.tolist(), slots.tolist(), strict=True):
            code = self._codes[order[row, slot]]
            members = code.members[known[row, code.members]]
            lead = int(members[np.argmax(phi[row, members])])
            reasons[row].append(self._reason(code, lead, X[row], float(top[row, slot])))
        return reasons

    def _says_something(self, X: np.ndarray) -> np.ndarray:
        """Rows x codes: whether the row's values make the code's sentence a reason to check
        (its ``shown_if``, by default a count, share or flag above zero; its ``applies_to``)."""
        values_at = X[:, self._shown_at]
        holds = (values_at > self._shown_lo) & (values_at < self._shown_hi)
        shown = np.logical_or.reduceat(holds, self._shown_starts, axis=1)
        if self._applies is not None:
            code, at, lo, hi = self._applies
            shown[:, code] &= (X[:, at] > lo) & (X[:, at] < hi)
        return shown

    def _reason(self, code: _Code, lead: int, x: np.ndarray, contribution: float) -> Reason:
        texts = {
            language: code.templates[language].format(
                **{
                    name: format_value(name, x[at], language, self._labels.get(name))
                    for name, at in code.fields
                }
            )
            for language in LANGUAGES
        }
        return Reason(
            code=code.name,
            family=code.family,
            feature=self.bundle.feature_names[lead],
            value=float(x[lead]),
            contribution=contribution,
            text_zh=texts["zh"],
            text_en=_ONE_OF_MANY.sub(lambda m: f"1 {m[1]}{_SINGULAR[m[2]]}", texts["en"]),
        )


def _conditions(code: str, text: str, position: dict[str, int]) -> list[tuple[int, float, float]]:
    """A catalogue condition (``"a > 0 or b < 90"``) as (feature position, lo, hi) intervals."""
    conditions = []
    for part in text.split(" or "):
        try:
            feature, op, number = part.split()
            conditions.append((position[feature], *_BOUNDS[op](float(number))))
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"reason code {code}: condition {part!r} is not "
                f"'<model feature> <{'|'.join(_BOUNDS)}> <number>'"
            ) from error
    return conditions

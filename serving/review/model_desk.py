"""What ``/models`` reads and writes in the model registry: the versions side by side, their reports,
and model reviewers' decisions.

Every call reaches MLflow and blocks: the pages run them off the event loop. A version's figures
(:mod:`duanka.training.version_figures`) are read once and kept; its report, review and aliases
are read on every view, since they change.
"""

from __future__ import annotations

import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import mlflow

from duanka.training.approval import (
    FORCED_BY_TAG,
    REJECTED,
    Review,
    record_review,
    report_html,
    report_sha256,
    short,
)
from duanka.training.bundle import MODEL_NAME
from duanka.training.promote import CHAMPION
from duanka.training.report import build_report
from duanka.training.report_format import MISSING, local_time, number, percent
from duanka.training.version_figures import (
    BANDS,
    FPR_GROUPS,
    METRICS,
    VersionFigures,
    figures_of,
    registered_versions,
)

SHOWN = 6  # versions side by side: the champion and the newest others


class ReviewRefused(ValueError):
    """A review that is not recorded: the report changed since the page showed it, or there is none."""


@dataclass(frozen=True)
class Column:
    """One version's header and review state."""

    version: str
    aliases: tuple[str, ...]
    report_sha256: str | None
    review: Review | None
    forced_by: str | None
    promotion: str | None

    @property
    def review_covers_report(self) -> bool:
        """Whether the review was given on the report the version holds now."""
        return self.review is not None and self.review.report_sha256 == self.report_sha256


@dataclass(frozen=True)
class Cell:
    text: str
    differs: bool  # from the champion's


@dataclass(frozen=True)
class Row:
    label: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Overview:
    """The page's table: a column per version (the champion first), a row per figure."""

    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    champion: str | None


def _ratio(x: float | None) -> str:
    return MISSING if x is None or math.isnan(x) else f"{x:.2f}"


def _figure_rows(figures: VersionFigures) -> list[tuple[str, str]]:
    """``(label, text)`` of every figure the page compares, in the page's order."""
    p, m = figures.params, figures.metrics
    rows = [
        ("trained as of", local_time(p.get("as_of"), MISSING)),
        (
            "test months",
            f"{local_time(p.get('split_test_start'), MISSING)[:10]} → "
            f"{local_time(p.get('split_test_end'), MISSING)[:10]}",
        ),
        ("feature set version", p.get("feature_set_version", MISSING)),
        ("code version", p.get("code_version", MISSING)[:12]),
        ("label policy", p.get("label_policy", MISSING)),
        *((f"test {metric}", number(m.get(metric), 4 if "auc" in metric else 3)) for metric in METRICS),
        *((f"recall at band ≥ {b}", percent(figures.band_recall.get(b), 1)) for b in BANDS),
        *((f"band threshold {b}", number(figures.band_thresholds.get(b), 4)) for b in BANDS),
        *((f"FPR ratio {pair}", _ratio(figures.fpr_ratios.get(pair))) for pair in FPR_GROUPS),
    ]
    bt = figures.backtest
    rows += [
        ("backtest (same code)", f"{bt.span}, {bt.periods} periods" if bt else "none"),
        ("backtest pooled pr_auc", number(bt.metrics.get("pr_auc"), 4) if bt else MISSING),
        ("backtest pooled recall@1.0%", number(bt.metrics.get("recall@1.0%"), 3) if bt else MISSING),
        (
            "backtest FPR ratio out of province",
            _ratio(bt.metrics.get("out_of_province_ratio")) if bt else MISSING,
        ),
        # why a version's bundle figures are dashes (it fails verification, or predates them)
        ("figures read", figures.problem or "in full"),
    ]
    return rows


def side_by_side(figures: list[VersionFigures], champion: str | None) -> tuple[Row, ...]:
    """A row per figure, a cell per version, each marked where it differs from the champion's."""
    texts = [_figure_rows(f) for f in figures]
    by_version = dict(zip((f.version for f in figures), texts, strict=True))
    reference = by_version.get(champion) if champion is not None else None
    rows = []
    for i, (label, _) in enumerate(texts[0] if texts else []):
        cells = tuple(
            Cell(t[i][1], reference is not None and f.version != champion and t[i][1] != reference[i][1])
            for f, t in zip(figures, texts, strict=True)
        )
        rows.append(Row(label, cells))
    return tuple(rows)


class ModelDesk:
    """The registry as ``/models`` sees it.

    Parameters
    ----------
    client : mlflow.MlflowClient
        The service's registry client (:class:`duanka.serving.model_source.ModelSource`).
    """

    def __init__(self, client: mlflow.MlflowClient) -> None:
        self.client = client
        self._figures: dict[str, VersionFigures] = {}
        self._lock = threading.Lock()  # two views at once read a version's figures once

    def figures(self, version: str) -> VersionFigures:
        """The version's figures, read once; read again while they could not all be read."""
        with self._lock:
            if version in self._figures:
                return self._figures[version]
            figures = figures_of(self.client, version)
            if figures.problem is None:  # a registry that failed once may answer the next view
                self._figures[version] = figures
            return figures

    def overview(self) -> Overview:
        """The champion and the newest other versions, side by side."""
        numbers = [str(v.version) for v in registered_versions(self.client)]
        try:
            champion = str(self.client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
        except mlflow.exceptions.MlflowException:
            champion = None  # nothing promoted yet
        others = [n for n in numbers if n != champion]
        shown = ([champion] if champion in numbers else []) + others[: SHOWN - (champion is not None)]
        # one read per version: a search leaves the aliases out
        registered = [self.client.get_model_version(MODEL_NAME, n) for n in shown]
        columns = tuple(
            Column(
                str(v.version),
                tuple(sorted(v.aliases or [])),
                report_sha256(self.client, v.run_id),
                Review.from_tags(str(v.version), v.tags),
                v.tags.get(FORCED_BY_TAG),
                v.tags.get("promotion"),
            )
            for v in registered
        )
        rows = side_by_side([self.figures(c.version) for c in columns], champion)
        return Overview(columns, rows, champion)

    def run_of(self, version: str) -> str | None:
        """The training run of ``version``, or None for a version the registry does not hold."""
        try:
            return self.client.get_model_version(MODEL_NAME, version).run_id
        except mlflow.exceptions.MlflowException:
            return None

    def report(self, version: str) -> bytes | None:
        """The report ``version``'s run holds now, or None (no such version, or no report built)."""
        run_id = self.run_of(version)
        return None if run_id is None else report_html(self.client, run_id)

    def build_report(self, version: str) -> str:
        """Build ``version``'s report (:func:`duanka.training.report.build_report`, which logs it to the
        run) and return its SHA-256."""
        with tempfile.TemporaryDirectory() as tmp:
            build_report(
                f"models:/{MODEL_NAME}/{version}", Path(tmp) / "report.html", self.client, progress=False
            )
        sha = report_sha256(self.client, self.client.get_model_version(MODEL_NAME, version).run_id)
        assert sha is not None  # build_report logged it just now
        return sha

    def current_report(self, version: str) -> str | None:
        run_id = self.run_of(version)
        return None if run_id is None else report_sha256(self.client, run_id)

    def checked_review(self, version: str, decision: str, shown_sha256: str | None) -> str | None:
        """The report a review of ``version`` is given on: the one the page showed, if it is still
        the version's report.

        Raises
        ------
        ReviewRefused
            An approval without a report, or a report built again since the page was shown.
        """
        current = self.current_report(version)
        if current is None and decision != REJECTED:
            raise ReviewRefused(f"version {version} has no report to approve: build it first")
        if (shown_sha256 or None) != current:
            raise ReviewRefused(
                f"the report of version {version} is now {short(current)}, not the one reviewed "
                f"({short(shown_sha256)}): read it again, then review"
            )
        return current

    def record(self, review: Review) -> None:
        """Tag ``review`` on its version (:func:`duanka.training.approval.record_review`)."""
        record_review(self.client, review)

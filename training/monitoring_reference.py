"""The monitoring reference stored with a registered model: what its inputs and scores looked like.

Population stability (PSI of the score, CSI of each feature) compares the decisions of a period
with a reference population over the reference's own quantile bins
(:func:`duanka.training.monitoring.quantile_edges`). The reference is the population the shipped
model's band cuts were taken from: the openings of the band window before the as-of date
(:class:`duanka.training.fit.Fitted` ``band_window``), scored by the shipped model. Had the bands
been cut on other rows, a stable bank would read as drifting.

What is kept is counts, never rows: per feature and for the score, the inner bin edges, the
rows per bin and the missing ones (the last bin), so the reference travels as a small JSON
file with the model (:data:`REFERENCE_FILE`, an artifact of the model's run, its SHA-256 tagged
on the registered version as :data:`REFERENCE_TAG`) and no application leaves the training
machine in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from duanka.training.monitoring import BINS, bin_counts, binned_divergence, quantile_edges

REFERENCE_FILE = "monitoring_reference.json"
REFERENCE_TAG = "monitoring_reference_sha256"
LAYOUT = 1  # of the JSON: a reader refuses a layout it does not know rather than misread it


@dataclass(frozen=True)
class Binned:
    """One variable of the reference: its inner quantile edges and the rows in each bin.

    Attributes
    ----------
    edges : tuple of float
        Inner edges (:func:`~duanka.training.monitoring.quantile_edges`).
    counts : tuple of int
        Rows per bin of :func:`~duanka.training.monitoring.bin_index`, ``len(edges) + 2`` of them,
        the last one the missing values.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @classmethod
    def of(cls, values: np.ndarray, bins: int = BINS) -> Binned:
        """The reference of ``values`` on its own quantile bins."""
        values = np.asarray(values, dtype=float)
        edges = quantile_edges(values, bins)
        return cls(tuple(float(e) for e in edges), tuple(int(c) for c in bin_counts(values, edges)))

    @property
    def edge_array(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=float)

    @property
    def rows(self) -> int:
        return int(sum(self.counts))

    @property
    def missing_rate(self) -> float:
        """Share of the reference's rows without a value; NaN for an empty reference."""
        return self.counts[-1] / self.rows if self.rows else float("nan")

    def divergence(self, counts: np.ndarray) -> float:
        """PSI (CSI) of a period whose rows per bin, on these edges, are ``counts``."""
        return binned_divergence(np.asarray(self.counts), np.asarray(counts))

    def to_dict(self) -> dict[str, list]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Sequence[float]]) -> Binned:
        edges = tuple(float(e) for e in raw["edges"])
        counts = tuple(int(c) for c in raw["counts"])
        if len(counts) != len(edges) + 2:
            raise ValueError(f"{len(counts)} bin counts for {len(edges)} edges: not a reference")
        return cls(edges, counts)


@dataclass(frozen=True)
class MonitoringReference:
    """The shipped model's reference population, binned.

    Attributes
    ----------
    window : tuple of str
        ``[start, end)`` of the reference's ``applied_at`` (ISO 8601, UTC).
    rows : int
        Applications in it.
    score : Binned
        The shipped model's calibrated scores.
    features : dict of str to Binned
        Each model feature, in the model's column order.
    """

    window: tuple[str, str]
    rows: int
    score: Binned
    features: dict[str, Binned] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "layout": LAYOUT,
            "window": list(self.window),
            "rows": self.rows,
            "score": self.score.to_dict(),
            "features": {name: binned.to_dict() for name, binned in self.features.items()},
        }

    def text(self) -> str:
        """The JSON logged with the model; its SHA-256 is :meth:`sha256`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()

    @classmethod
    def from_text(cls, text: str) -> MonitoringReference:
        """Parse :meth:`text`.

        Raises
        ------
        ValueError
            Not a reference of a layout this code reads.
        """
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("layout") != LAYOUT:
            raise ValueError(f"not a monitoring reference of layout {LAYOUT}")
        start, end = raw["window"]
        return cls(
            window=(str(start), str(end)),
            rows=int(raw["rows"]),
            score=Binned.from_dict(raw["score"]),
            features={str(name): Binned.from_dict(b) for name, b in raw["features"].items()},
        )


def reference_of(
    X: np.ndarray, scores: np.ndarray, names: Sequence[str], window: tuple[str, str], bins: int = BINS
) -> MonitoringReference:
    """The reference of a scored feature matrix.

    Parameters
    ----------
    X : numpy.ndarray
        One row per application, columns ``names``.
    scores : numpy.ndarray
        The shipped model's calibrated score of each row.
    names : sequence of str
        The model's features, in column order.
    window : tuple of str
        ``[start, end)`` of the rows' ``applied_at``, as said in the monitoring.
    bins : int
        Quantile bins per variable.
    """
    X = np.asarray(X, dtype=float)
    return MonitoringReference(
        window=window,
        rows=len(X),
        score=Binned.of(scores, bins),
        features={name: Binned.of(X[:, i], bins) for i, name in enumerate(names)},
    )


def band_window_reference(
    frame: pd.DataFrame,
    names: Sequence[str],
    score: Callable[[np.ndarray], np.ndarray],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> MonitoringReference:
    """The reference of the rows of ``frame`` applied from ``start`` on, scored by ``score``.

    The rows are chosen as :func:`duanka.training.fit.fit_models` chose those it cut the bands
    from (everything from the band window's start: the frame holds nothing after its as-of date).

    Parameters
    ----------
    frame : pandas.DataFrame
        The run's training-set frame (``applied_at`` and the model features).
    names : sequence of str
        The model's features.
    score : callable
        The shipped model's calibrated score of a feature matrix (``Fitted.score``).
    start, end : pandas.Timestamp
        The band window (``Fitted.band_window``); ``end`` is said, not applied.
    """
    rows = frame.loc[frame["applied_at"].to_numpy() >= start]
    X = rows.loc[:, list(names)].to_numpy(dtype=np.float64)
    return reference_of(X, score(X), names, (start.isoformat(), end.isoformat()))

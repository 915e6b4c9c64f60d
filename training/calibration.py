"""Calibrators from the booster's raw margin to P(mule), stored as JSON (never pickled).

Downsampling negatives in training inflates raw scores; calibrating on the
untouched validation months maps them back to the bank's real prevalence.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class PlattCalibrator:
    """Logistic regression on the raw margin: two parameters, smooth, hard to overfit."""

    kind = "platt"

    def __init__(self, slope: float | None = None, intercept: float | None = None) -> None:
        self.slope = slope
        self.intercept = intercept

    def fit(self, margin: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both classes in the validation months")
        from sklearn.linear_model import LogisticRegression  # at fit: the CLI imports this module

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(np.asarray(margin).reshape(-1, 1), y)
        self.slope = float(lr.coef_[0, 0])
        self.intercept = float(lr.intercept_[0])
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        z = self.slope * np.asarray(margin, dtype=float) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "slope": self.slope, "intercept": self.intercept}


class IsotonicCalibrator:
    """Monotone step function on the margin: flexible, needs many validation positives."""

    kind = "isotonic"

    def __init__(self, x: list[float] | None = None, y: list[float] | None = None) -> None:
        self.x = x
        self.y = y

    def fit(self, margin: np.ndarray, y: np.ndarray) -> IsotonicCalibrator:
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both classes in the validation months")
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, y)
        self.x = [float(v) for v in iso.X_thresholds_]
        self.y = [float(v) for v in iso.y_thresholds_]
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(margin, dtype=float), self.x, self.y)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "x": self.x, "y": self.y}


Calibrator = PlattCalibrator | IsotonicCalibrator


class CalibrationKind(StrEnum):
    """How margins become probabilities (``--calibration``)."""

    PLATT = "platt"
    ISOTONIC = "isotonic"


_KINDS: dict[str, type[PlattCalibrator] | type[IsotonicCalibrator]] = {
    "platt": PlattCalibrator,
    "isotonic": IsotonicCalibrator,
}


def make_calibrator(kind: str) -> Calibrator:
    try:
        return _KINDS[kind]()
    except KeyError:
        raise ValueError(f"unknown calibration {kind!r}; choose one of {sorted(_KINDS)}") from None


def calibrator_from_dict(spec: dict) -> Calibrator:
    params = {k: v for k, v in spec.items() if k != "kind"}
    return _KINDS[spec["kind"]](**params)

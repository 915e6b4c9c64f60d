"""The two models of a training run: the evidence and the shipped refit.

The out-of-time split (:mod:`duanka.training.split`) fits the *evidence* model on the oldest
mature months, stops it early and calibrates it on the next, and tests it on the
latest mature ones: it chooses the number of rounds and is what every reported
out-of-time figure is about. The *shipped* model is then refit with that
configuration on all the labelled history known at the as-of date (the rows and
label weights of :mod:`duanka.training.labels`), calibrated on the most recent mature
months (whose labels are complete), and banded on the latest applications it
scores: band cuts are score quantiles and need no labels, so they come from the
newest openings, not from months the model learnt from long ago.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from duanka.features.registry import MODEL_FEATURES, monotone_constraints
from duanka.training.bands import BAND_WINDOW_DAYS, Bands
from duanka.training.calibration import Calibrator, make_calibrator
from duanka.training.dask_fit import DaskMuleClassifier
from duanka.training.fairness import ORIGIN, OUT_OF_PROVINCE_LEGIT_WEIGHT, origin_weights
from duanka.training.labels import DEFAULT_HORIZON_DAYS, DEFAULT_POLICY, LabelPolicy, RefitRows, refit_rows
from duanka.training.model import MuleClassifier, downsample
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit


@dataclass(frozen=True)
class FitOptions:
    """How the models are fitted; every field is logged as a parameter of the run."""

    calibration: str = "platt"
    negative_rate: float = 0.2
    seed: int = 0
    label_policy: LabelPolicy = DEFAULT_POLICY
    horizon_days: int = DEFAULT_HORIZON_DAYS
    band_days: int = BAND_WINDOW_DAYS
    out_of_province_legit_weight: float = OUT_OF_PROVINCE_LEGIT_WEIGHT


@dataclass(frozen=True)
class Window:
    """``[start, end)`` of ``applied_at`` and what it held."""

    start: pd.Timestamp
    end: pd.Timestamp
    rows: int
    positives: int

    def describe(self, prefix: str) -> dict[str, object]:
        return {
            f"{prefix}_from": self.start.isoformat(),
            f"{prefix}_to": self.end.isoformat(),
            f"{prefix}_rows": self.rows,
            f"{prefix}_positives": self.positives,
        }


@dataclass(frozen=True)
class Fitted:
    """What a run ships and the evidence it is judged by."""

    names: list[str]
    evidence: MuleClassifier  # fitted on the split's training months
    evidence_calibrator: Calibrator  # on the validation months
    evidence_bands: Bands  # from its validation scores: the test months' catch rates
    shipped: MuleClassifier  # refit on all labelled history, as many rounds as the evidence chose
    calibrator: Calibrator
    bands: Bands
    refit: RefitRows
    refit_window: Window  # the rows the shipped model saw
    calibration_window: Window
    band_window: Window

    def describe(self) -> dict[str, object]:
        """What the shipped model saw, for the run's parameters and the report."""
        delays = self.refit.delays.quantiles() if self.refit.delays is not None else {}
        return {
            "evidence_best_iteration": self.evidence.booster_.best_iteration,
            "shipped_rounds": self.shipped.booster_.current_iteration(),
            **self.refit_window.describe("refit"),
            "refit_weight_sum": round(float(self.refit.weight.sum()), 1),
            **self.calibration_window.describe("calibration"),
            **self.band_window.describe("bands"),
            **{f"label_{k}_days": round(v, 1) for k, v in delays.items()},
        }

    def evidence_score(self, X: np.ndarray) -> np.ndarray:
        return self.evidence_calibrator.predict(self.evidence.decision_function(X))

    def score(self, X: np.ndarray) -> np.ndarray:
        """The shipped model's calibrated score, as serving computes it."""
        return self.calibrator.predict(self.shipped.decision_function(X))


def matrix(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    return frame.loc[:, names].to_numpy(dtype=np.float64)


def sampled_weights(train: pd.DataFrame) -> np.ndarray | None:
    """A sampled set's weights (:mod:`duanka.training.sampled_set`); None where every row is there."""
    return train["weight"].to_numpy() if "weight" in train.columns else None


def classifier(
    options: FitOptions,
    fit_client: object | None = None,
    *,
    names: list[str] | None = None,
    **params: object,
) -> MuleClassifier:
    """The classifier both models are fitted with, its monotone constraints read from the
    registry's declarations of ``names``, the model's columns in order (default
    :data:`~duanka.features.registry.MODEL_FEATURES`)."""
    common = {
        "negative_rate": options.negative_rate,
        "random_state": options.seed,
        "monotone_constraints": list(monotone_constraints(MODEL_FEATURES if names is None else names)),
        **params,
    }
    if fit_client is None:
        return MuleClassifier(**common)  # type: ignore[arg-type]
    return DaskMuleClassifier(client=fit_client, **common)


def fit_evidence(
    parts: dict[str, pd.DataFrame],
    names: list[str],
    options: FitOptions,
    params: dict | None = None,
    fit_client: object | None = None,
) -> MuleClassifier:
    """LightGBM on the training months, stopped early on the validation months, legitimate
    out-of-province rows weighted (:mod:`duanka.training.fairness`)."""
    train = parts[TRAIN]
    X, y = matrix(train, names), train["label"].to_numpy()
    origin = origin_weights(train[ORIGIN].to_numpy(), y, options.out_of_province_legit_weight)
    weight = sampled_weights(train)
    if weight is None:  # the rows MuleClassifier itself would keep, with the origin weights on
        rows, weight = downsample(y, options.negative_rate, options.seed, origin)
        X, y = X[rows], y[rows]
    else:
        weight = weight * origin
    return classifier(options, fit_client, names=names, **(params or {})).fit(
        X,
        y,
        eval_set=(matrix(parts[VALID], names), parts[VALID]["label"].to_numpy()),
        feature_names=names,
        sample_weight=weight,
    )


def _window(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, label: np.ndarray) -> Window:
    return Window(start, end, len(frame), int(np.asarray(label).sum()))


def _refit_sample(
    frame: pd.DataFrame, refit: RefitRows, options: FitOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, labels and weights of the refit's downsampled rows (label and origin weights).

    A set sampled on a cluster (:mod:`duanka.training.sampled_set`) marks the rows it already
    downsampled (``sampled``, with their ``weight``); only the others are downsampled here.
    """
    label = refit.label
    origin = frame[ORIGIN].to_numpy()[refit.rows]
    base = refit.weight * origin_weights(origin, label, options.out_of_province_legit_weight)
    if "sampled" not in frame.columns:
        kept, weight = downsample(label, options.negative_rate, options.seed, base)
        return refit.rows[kept], label[kept], weight
    sampled = frame["sampled"].to_numpy()[refit.rows]
    whole = np.flatnonzero(~sampled)
    kept, weight = downsample(label[whole], options.negative_rate, options.seed, base[whole])
    chosen = np.concatenate([np.flatnonzero(sampled), whole[kept]])
    weights = np.concatenate([frame["weight"].to_numpy()[refit.rows[sampled]] * base[sampled], weight])
    order = np.argsort(refit.rows[chosen], kind="stable")
    return refit.rows[chosen][order], label[chosen][order], weights[order]


def fit_models(
    frame: pd.DataFrame,
    parts: dict[str, pd.DataFrame],
    split: TimeSplit,
    confirmed: np.ndarray,
    as_of: pd.Timestamp,
    outcome_window_days: int,
    options: FitOptions,
    *,
    names: list[str],
    params: dict | None = None,
    fit_client: object | None = None,
) -> Fitted:
    """Fit the evidence model on the split and the shipped model on all labelled history.

    Parameters
    ----------
    frame : pandas.DataFrame
        The training set's frame as of ``as_of`` (rows the watchlist rule refuses are out).
    parts : dict
        The split's training, validation and test rows of ``frame``.
    split : TimeSplit
    confirmed : numpy.ndarray
        Each frame row's earliest confirmation known at ``as_of``
        (:func:`~duanka.training.labels.confirmed_us`).
    options : FitOptions
    names : list of str
        The model's features.
    params : dict, optional
        LightGBM parameters a tuning search chose.
    fit_client : distributed.Client, optional
        Fit both models across this cluster.
    """
    evidence = fit_evidence(parts, names, options, params, fit_client)
    valid_y = parts[VALID]["label"].to_numpy()
    valid_margin = evidence.decision_function(matrix(parts[VALID], names))
    evidence_calibrator = make_calibrator(options.calibration).fit(valid_margin, valid_y)
    evidence_bands = Bands.from_budget(evidence_calibrator.predict(valid_margin))

    refit = refit_rows(
        frame,
        confirmed,
        as_of,
        policy=options.label_policy,
        outcome_window_days=outcome_window_days,
        horizon_days=options.horizon_days,
    )
    rows, label, weight = _refit_sample(frame, refit, options)
    rounds = max(1, int(evidence.booster_.best_iteration or evidence.booster_.current_iteration()))
    shipped = classifier(options, fit_client, names=names, **{**(params or {}), "n_estimators": rounds}).fit(
        matrix(frame.iloc[rows], names), label, feature_names=names, sample_weight=weight
    )
    applied = frame["applied_at"].iloc[refit.rows]
    refit_window = Window(applied.min(), as_of, len(refit.rows), int(refit.label.sum()))

    # Calibrated on the latest months whose labels are complete; the rows the evidence was judged on.
    recent = pd.concat([parts[VALID], parts[TEST]])
    calibrator = make_calibrator(options.calibration).fit(
        shipped.decision_function(matrix(recent, names)), recent["label"].to_numpy()
    )
    calibration_window = _window(recent, split.valid_start, split.test_end, recent["label"])

    band_start = as_of - pd.Timedelta(days=options.band_days)
    latest = frame.loc[frame["applied_at"].to_numpy() >= band_start]
    if len(latest) < 200:
        raise ValueError(
            f"only {len(latest)} applications in the {options.band_days} days before {as_of.date()}: "
            "too few to set the band cuts"
        )
    bands = Bands.from_budget(calibrator.predict(shipped.decision_function(matrix(latest, names))))
    band_window = Window(band_start, as_of, len(latest), 0)
    return Fitted(
        names=names,
        evidence=evidence,
        evidence_calibrator=evidence_calibrator,
        evidence_bands=evidence_bands,
        shipped=shipped,
        calibrator=calibrator,
        bands=bands,
        refit=refit,
        refit_window=refit_window,
        calibration_window=calibration_window,
        band_window=band_window,
    )

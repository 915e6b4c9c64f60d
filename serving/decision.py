"""The one scoring path: feature rows to calibrated scores, bands and reasons.

The service (:class:`duanka.serving.scorer.Scorer`, the few rows of a request) and batch
scoring (:func:`duanka.serving.batch.score_features`, a period in chunks) both call
:func:`decide`, so one feature row gets one score, one band and one set of reasons
whichever way it is scored, to the last bit. Each row's answer depends on that row
and the cuts alone, never on the rows scored with it. Hard rules
(:mod:`duanka.serving.rules`) are each caller's to apply afterwards: they override the
band, never the score. :func:`answer` words one decision as the service answers it and the
decision record stores it, whether the service or ``duanka score --record`` made it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from duanka.features.registry import MODEL_FEATURES
from duanka.serving.model_source import LoadedModel
from duanka.serving.rules import RuleDecision, refusal_action
from duanka.training.bands import ACTION_TEXT, ACTIONS, BLOCKED, Bands, DailyBands
from duanka.training.explain import Reason

LOW = "low"


@dataclass(frozen=True)
class ModelDecisions:
    """What the model decided for each row of a feature matrix, row for row.

    Attributes
    ----------
    scores : numpy.ndarray
        Calibrated scores.
    bands : numpy.ndarray
        Band names (object array of ``str``).
    reasons : list of list of Reason
        Top reasons; empty where the row was not explained or nothing raises its risk.
    """

    scores: np.ndarray
    bands: np.ndarray
    reasons: list[list[Reason]]


def decide(
    model: LoadedModel,
    X: np.ndarray,
    cuts: Bands | DailyBands,
    *,
    applied_at: pd.Series | None = None,
    explain_all: bool = False,
) -> ModelDecisions:
    """Score, band and explain feature rows.

    Parameters
    ----------
    model : LoadedModel
        A verified, compatible model.
    X : numpy.ndarray
        One row per application, columns in :data:`duanka.features.registry.MODEL_FEATURES` order.
    cuts : Bands or DailyBands
        The band cuts in force: one set for every row, or each row's local day's.
    applied_at : pandas.Series, optional
        Each row's ``applied_at``; needed by :class:`DailyBands` cuts only.
    explain_all : bool
        Reasons for every row; otherwise for medium-or-higher bands only, because
        explanation, not prediction, is what costs.

    Raises
    ------
    ValueError
        Daily cuts without ``applied_at``.
    """
    X = np.asarray(X, dtype=np.float64)
    scores = model.registered.bundle.score(X)
    if isinstance(cuts, DailyBands):
        if applied_at is None:
            raise ValueError("daily band cuts need each row's applied_at")
        bands = cuts.assign(scores, applied_at)
    else:
        bands = cuts.assign(scores)
    bands = bands.astype(object)
    explained = np.arange(len(X)) if explain_all else np.flatnonzero(bands != LOW)
    reasons: list[list[Reason]] = [[] for _ in range(len(X))]
    if len(explained):
        _, found = model.explainer.explain(X[explained])
        for row, row_reasons in zip(explained.tolist(), found, strict=True):
            reasons[row] = row_reasons
    return ModelDecisions(scores, bands, reasons)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def reason_answer(reason: Reason) -> dict[str, object]:
    """One model reason as an answer gives it."""
    return {
        "code": reason.code,
        "family": reason.family,
        "feature": reason.feature,
        "value": _number(reason.value),
        "contribution": float(reason.contribution),
        "text_zh": reason.text_zh,
        "text_en": reason.text_en,
    }


def answer(
    model: LoadedModel,
    application_id: str,
    x: np.ndarray,
    score: float,
    band: str,
    reasons: Sequence[Reason],
    refused: RuleDecision | None = None,
) -> dict:
    """One decided application as the service answers it and the decision record stores it.

    Parameters
    ----------
    model : LoadedModel
        The model that decided.
    application_id : str
        The application.
    x : numpy.ndarray
        Its feature row, in :data:`MODEL_FEATURES` order.
    score, band : float, str
        The model's score and band (:func:`decide`).
    reasons : sequence of Reason
        The model's reasons for it (empty where it was not explained).
    refused : RuleDecision, optional
        The hard rule that refused it: it decides, with band ``blocked`` and its one reason;
        the model's score and band (``model_band``) stay, for monitoring only.
    """
    action = ACTIONS[band]
    zh, en = ACTION_TEXT[action]
    response = {
        "application_id": application_id,
        "score": float(score),
        "band": band,
        "action": action,
        "action_zh": zh,
        "action_en": en,
        "reasons": [reason_answer(r) for r in reasons],
        "rule": None,
        "model_band": band,
        "model": model.describe(),
        "features": {name: _number(v) for name, v in zip(MODEL_FEATURES, x, strict=True)},
    }
    if refused is not None:
        action, zh, en = refusal_action()
        response |= {
            "band": BLOCKED,
            "action": action,
            "action_zh": zh,
            "action_en": en,
            "reasons": [refused.reason()],
            "rule": refused.rule,
        }
    return response

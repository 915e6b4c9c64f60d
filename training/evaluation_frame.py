"""The evaluation frame: the scored rows a training run logs, so its report never needs the event store.

Validation and test rows, a sample of the training rows, and the mature applications the
watchlist rule refused in the out-of-time months, each with its features, the fairness
attributes, its label, the evidence model's score and the rule that refused it, if any.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from duanka.data.watchlist import RULE as WATCHLIST_RULE
from duanka.features.training_set import TrainingSet
from duanka.training.fit import matrix
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit

EVALUATION_FRAME_FILE = "evaluation_frame.parquet"


def rule_refused_parts(ts: TrainingSet, split: TimeSplit) -> dict[str, pd.DataFrame]:
    """The mature applications the watchlist rule refused, by out-of-time part.

    Out of fitting, calibration and the logged metrics (the model never decides them);
    the evaluation frame carries them so the report counts rule refusals apart from
    model alerts.
    """
    refused = ts.refused
    if refused.empty:
        return {}
    mature = refused.loc[refused["label_mature"]]
    part = split.assign(mature["applied_at"])
    return {name: mature.loc[part == name] for name in (VALID, TEST)}


EVALUATION_TRAIN_SAMPLE = 100_000
# Attributes the report measures fairness by; logged even when the model does not use them.
FAIRNESS_ATTRIBUTES = (
    "applicant_gender",
    "applicant_age",
    "applicant_out_of_province",
    "channel",
    "corporate",
)


def refused_by_rule(refused: pd.DataFrame) -> Callable[[pd.DataFrame], pd.Series]:
    """Per row of a frame, the hard rule that refused it (``"watchlist"``) or ``""``.

    ``refused`` holds the applications the watchlist rule refused at their ``applied_at``
    (:attr:`duanka.features.training_set.TrainingSet.refused`), found with the serving rule itself,
    so the report counts rule refusals apart from model alerts.
    """
    ids = refused["application_id"] if len(refused) else pd.Series([], dtype=object)

    def rule(frame: pd.DataFrame) -> pd.Series:
        listed = frame["application_id"].isin(ids).to_numpy()
        return pd.Series(np.where(listed, WATCHLIST_RULE, ""), index=frame.index, dtype=object)

    return rule


def evaluation_frame(
    parts: dict[str, pd.DataFrame],
    names: list[str],
    score: Callable[[np.ndarray], np.ndarray],
    seed: int,
    rules: Callable[[pd.DataFrame], pd.Series] | None = None,
    refused: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Validation and test rows, and a sample of training rows, with features, label and score:
    what the model report reads, so it never needs the event store.

    ``rules`` names, per row, the hard rule that would have refused it (:func:`refused_by_rule`);
    the frame's ``rule`` column is empty without it. ``refused`` adds, to their parts, the
    applications a rule refused (:func:`rule_refused_parts`), scored for monitoring. Of a
    sampled training set's training months, the uniform sample stands for them (the kept
    rows over-represent mules)."""
    train = parts[TRAIN]
    if "uniform" in train.columns:
        train = train.loc[train["uniform"].to_numpy()]
    if len(train) > EVALUATION_TRAIN_SAMPLE:
        train = train.sample(EVALUATION_TRAIN_SAMPLE, random_state=seed).sort_values("applied_at")
    frames = []
    for name, part in ((TRAIN, train), (VALID, parts[VALID]), (TEST, parts[TEST])):
        rows = part
        if refused is not None and name in refused and not refused[name].empty:
            rows = pd.concat([part, refused[name]]).sort_values(
                ["applied_at", "application_id"], kind="stable"
            )
        extra = [a for a in FAIRNESS_ATTRIBUTES if a not in names]
        frame = rows.loc[:, ["application_id", "applied_at", "label", *names, *extra]].copy()
        frame["part"] = name
        frame["score"] = score(matrix(rows, names))
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["rule"] = "" if rules is None else rules(out).to_numpy(dtype=object)
    return out

"""Reviewed negatives: a case a reviewer cleared may enter the shipped refit as a full-weight negative.

Point in time: only clearances made by the as-of date count, a later disposition supersedes an
earlier one, and a clearance never turns an application confirmed by then into a negative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duanka.features.registry import MODEL_FEATURES
from duanka.features.training_set import TrainingSet
from duanka.training import run
from duanka.training.fit import FitOptions, fit_models
from duanka.training.labels import (
    REVIEWED_COLUMN,
    LabelPolicy,
    RefitRows,
    confirmed_us,
    refit_rows,
    reviewed_us,
)
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit

AS_OF = pd.Timestamp("2025-01-01", tz="UTC")
WINDOW = 180
DAY = pd.Timedelta(days=1)


def _frame(ages_days: list[float]) -> pd.DataFrame:
    applied = AS_OF - pd.to_timedelta(ages_days, unit="D")
    frame = pd.DataFrame({"application_id": [f"A{i}" for i in range(len(ages_days))], "applied_at": applied})
    frame["label_mature"] = frame["applied_at"] + WINDOW * DAY <= AS_OF
    return frame


def _delays_and_young(young: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """30 mature mules confirmed after 60..89 days (so a young unconfirmed row weighs little under
    the delay-weighted policy), then the young rows ``young`` (ages in days), ids A30 on."""
    frame = _frame([300] * 30 + young)
    labels = pd.DataFrame(
        {
            "application_id": frame["application_id"][:30],
            "confirmed_at": frame["applied_at"][:30] + pd.to_timedelta(range(60, 90), unit="D"),
        }
    )
    return frame, labels


def _by_id(frame: pd.DataFrame, rows: RefitRows) -> dict[str, tuple[int, float]]:
    ids = frame["application_id"].iloc[rows.rows]
    return dict(zip(ids, zip(rows.label.tolist(), rows.weight.tolist(), strict=True), strict=True))


def _refit(
    frame: pd.DataFrame,
    labels: pd.DataFrame,
    reviewed: pd.DataFrame | None,
    policy: LabelPolicy = LabelPolicy.DELAY_WEIGHTED,
    as_of: pd.Timestamp = AS_OF,
) -> dict[str, tuple[int, float]]:
    if reviewed is not None:
        frame = frame.assign(**{REVIEWED_COLUMN: reviewed_us(frame, reviewed, as_of)})
    rows = refit_rows(
        frame, confirmed_us(frame, labels, as_of), as_of, policy=policy, outcome_window_days=WINDOW
    )
    return _by_id(frame, rows)


def test_a_cleared_young_application_becomes_a_full_weight_negative():
    frame, labels = _delays_and_young([70, 20])
    before = _refit(frame, labels, None)
    assert before["A30"] == (0, pytest.approx(11 / 30))  # 11 of the 30 delays are at most 70 days
    assert "A31" not in before  # no mule is confirmed within 20 days: it teaches nothing
    reviewed = pd.DataFrame(
        {"application_id": ["A30", "A31"], "reviewed_at": [AS_OF - 60 * DAY, AS_OF - DAY]}
    )
    after = _refit(frame, labels, reviewed)
    assert after["A30"] == (0, 1.0) and after["A31"] == (0, 1.0)
    # Every other row keeps what the policy gave it.
    assert {k: v for k, v in after.items() if k not in ("A30", "A31")} == {
        k: v for k, v in before.items() if k != "A30"
    }


def test_a_clearance_made_after_the_as_of_date_changes_nothing():
    frame, labels = _delays_and_young([70, 20])
    later = pd.DataFrame({"application_id": ["A30", "A31"], "reviewed_at": [AS_OF + DAY, AS_OF + 5 * DAY]})
    assert _refit(frame, labels, later) == _refit(frame, labels, None)
    assert (reviewed_us(frame, later, AS_OF) == -1).all()


def test_a_clearance_in_the_column_later_than_the_as_of_date_is_ignored_by_the_refit_too():
    # A column computed at a later as-of (a training set shared between periods) leaks nothing.
    frame, labels = _delays_and_young([70])
    reviewed = pd.DataFrame({"application_id": ["A30"], "reviewed_at": [AS_OF + DAY]})
    ahead = frame.assign(**{REVIEWED_COLUMN: reviewed_us(frame, reviewed, AS_OF + 10 * DAY)})
    rows = refit_rows(
        ahead,
        confirmed_us(ahead, labels, AS_OF),
        AS_OF,
        policy=LabelPolicy.DELAY_WEIGHTED,
        outcome_window_days=WINDOW,
    )
    assert _by_id(ahead, rows)["A30"] == (0, pytest.approx(11 / 30))


def test_a_confirmed_application_is_not_turned_negative_by_its_clearance():
    frame, labels = _delays_and_young([70, 40])
    # A30 cleared, then confirmed (a police notice) before the as-of date; A31 confirmed, then cleared.
    confirmations = pd.DataFrame(
        {"application_id": ["A30", "A31"], "confirmed_at": [AS_OF - 10 * DAY, AS_OF - 30 * DAY]}
    )
    labels = pd.concat([labels, confirmations], ignore_index=True)
    reviewed = pd.DataFrame(
        {"application_id": ["A30", "A31"], "reviewed_at": [AS_OF - 50 * DAY, AS_OF - 20 * DAY]}
    )
    after = _refit(frame, labels, reviewed)
    assert after["A30"] == (1, 1.0) and after["A31"] == (1, 1.0)


def test_a_cleared_application_confirmed_only_after_the_as_of_date_is_a_negative_then():
    frame, labels = _delays_and_young([70])
    labels = pd.concat(
        [labels, pd.DataFrame({"application_id": ["A30"], "confirmed_at": [AS_OF + 10 * DAY]})],
        ignore_index=True,
    )
    reviewed = pd.DataFrame({"application_id": ["A30"], "reviewed_at": [AS_OF - 60 * DAY]})
    assert _refit(frame, labels, reviewed)["A30"] == (0, 1.0)
    # ... and at an as-of after the confirmation, the policy's positive.
    assert _refit(frame, labels, reviewed, as_of=AS_OF + 20 * DAY)["A30"] == (1, 1.0)


def test_the_latest_disposition_by_the_as_of_date_decides():
    frame = _frame([30, 30, 30, 30])
    dispositions = pd.DataFrame(
        {
            "application_id": ["A0", "A0", "A1", "A1", "A2", "A2", "A3"],
            "reviewed_at": [AS_OF - 9 * DAY, AS_OF - 5 * DAY] * 2
            + [AS_OF - 9 * DAY, AS_OF + DAY, AS_OF - DAY],
            "status": ["cleared", "escalated", "escalated", "cleared", "cleared", "escalated", "confirmed"],
        }
    )
    got = reviewed_us(frame, dispositions, AS_OF)
    micros = lambda t: t.value // 1_000  # noqa: E731
    # A0: the clearance was superseded by an escalation; A1: escalated, then cleared; A2: the
    # escalation came after the as-of date, so the clearance stands; A3: confirmed, never cleared.
    assert got.tolist() == [-1, micros(AS_OF - 5 * DAY), micros(AS_OF - 9 * DAY), -1]


def test_without_a_status_every_row_is_a_clearance_and_unknown_ids_are_ignored():
    frame = _frame([30, 30])
    reviewed = pd.DataFrame(
        {"application_id": ["A1", "A1", "Z9"], "reviewed_at": [AS_OF - 9 * DAY, AS_OF - 2 * DAY, AS_OF - DAY]}
    )
    assert reviewed_us(frame, reviewed, AS_OF).tolist() == [-1, (AS_OF - 2 * DAY).value // 1_000]
    assert (reviewed_us(frame, None, AS_OF) == -1).all()
    assert (reviewed_us(frame, reviewed.iloc[:0], AS_OF) == -1).all()


@pytest.mark.parametrize("policy", [LabelPolicy.MATURE, LabelPolicy.HORIZON])
def test_every_policy_takes_a_young_cleared_row_as_a_full_negative(policy):
    frame, labels = _delays_and_young([20])
    assert "A30" not in _refit(frame, labels, None, policy)  # too young for either policy
    reviewed = pd.DataFrame({"application_id": ["A30"], "reviewed_at": [AS_OF - 10 * DAY]})
    after = _refit(frame, labels, reviewed, policy)
    assert after["A30"] == (0, 1.0)
    assert np.all([after[k] == v for k, v in _refit(frame, labels, None, policy).items()])


def test_the_shipped_refit_learns_from_the_reviewed_negatives_of_its_frame():
    rng = np.random.default_rng(0)
    n = 12_000
    applied = AS_OF - pd.to_timedelta(np.sort(rng.uniform(1, 730, n))[::-1], unit="D")
    signal = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(signal * 2.5 - 5)))).astype(np.int8)
    name = MODEL_FEATURES[0]  # any registered feature: the fit reads its declaration
    frame = pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(n)],
            "applied_at": applied,
            name: signal,
            "label": label,
            "applicant_out_of_province": 0.0,
        }
    )
    frame["label_mature"] = frame["applied_at"] + WINDOW * DAY <= AS_OF
    # Mules are confirmed 60 to 120 days after opening: the youngest rows have no label yet.
    delay = pd.to_timedelta(rng.uniform(60, 120, n), unit="D")
    known = (label == 1) & (frame["applied_at"] + delay <= AS_OF).to_numpy()
    labels = pd.DataFrame(
        {"application_id": frame["application_id"][known], "confirmed_at": (applied + delay)[known]}
    )
    young_legit = np.flatnonzero((frame["applied_at"] > AS_OF - 30 * DAY).to_numpy() & (label == 0))[:200]
    reviewed = pd.DataFrame(
        {"application_id": frame["application_id"].iloc[young_legit], "reviewed_at": AS_OF - DAY}
    )
    split = TimeSplit.before_maturity(AS_OF, outcome_window_days=WINDOW)
    part = split.assign(frame["applied_at"])
    parts = {name: frame.loc[part == name] for name in (TRAIN, VALID, TEST)}
    confirmed = confirmed_us(frame, labels, AS_OF)
    options = FitOptions(label_policy=LabelPolicy.DELAY_WEIGHTED)

    def refit(with_column: pd.DataFrame) -> RefitRows:
        fitted = fit_models(with_column, parts, split, confirmed, AS_OF, WINDOW, options, names=[name])
        return fitted.refit

    plain = refit(frame)
    marked = refit(frame.assign(**{REVIEWED_COLUMN: reviewed_us(frame, reviewed, AS_OF)}))
    weight = dict(zip(marked.rows.tolist(), marked.weight.tolist(), strict=True))
    assert all(weight[i] == 1.0 for i in young_legit)
    assert marked.weight.sum() > plain.weight.sum() + 150  # they weighed next to nothing before


def test_fit_as_of_hands_the_refit_the_clearances_known_at_the_training_sets_as_of(monkeypatch):
    frame = _frame([70, 20, 20])
    ts = TrainingSet(frame=frame, summary=None, as_of=AS_OF, outcome_window_days=WINDOW, inputs_sha256={})  # type: ignore[arg-type]
    seen: list[pd.DataFrame] = []
    monkeypatch.setattr(run, "fit_models", lambda f, *args, **kwargs: seen.append(f))
    reviewed = pd.DataFrame(
        {
            "application_id": ["A0", "A1", "A2"],
            "reviewed_at": [AS_OF - DAY, AS_OF - DAY, AS_OF + DAY],
            "status": ["cleared", "escalated", "cleared"],
        }
    )
    labels = pd.DataFrame({"application_id": ["elsewhere"], "confirmed_at": [AS_OF - DAY]})
    cfg = run.TrainConfig(as_of=AS_OF)
    run.fit_as_of(ts, {}, None, labels, cfg, reviewed=reviewed)  # type: ignore[arg-type]
    run.fit_as_of(ts, {}, None, labels, cfg)  # type: ignore[arg-type]
    assert seen[0][REVIEWED_COLUMN].tolist() == [(AS_OF - DAY).value // 1_000, -1, -1]
    assert REVIEWED_COLUMN not in seen[1].columns and REVIEWED_COLUMN not in ts.frame.columns

"""The service scores openings as they happen: dates are bounded by the server's clock alone.

An application dated more than the tolerance before the clock, or more than the (small) future
tolerance after it, is refused; what other callers sent never moves either bound, and the
refusal shows no time but the clock's.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import InvalidInput, prepare_applications
from duanka.serving.scorer import DEFAULT_FUTURE_TOLERANCE, DEFAULT_TOLERANCE, Scorer
from tests.factories import CHAIN_KEY

BEIJING = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def _at(row: dict) -> pd.Timestamp:
    return pd.Timestamp(row["applied_at"]).tz_convert("UTC")


@pytest.fixture
def now(served_bank) -> pd.Timestamp:
    """The server's clock in these tests: a minute after the last held-back application."""
    return _at(served_bank.holdout[-1]) + timedelta(minutes=1)


@pytest.fixture
def scorer_at(served_bank, model, tmp_path):
    """A scorer whose clock reads the given instant, on a fresh copy of the state."""
    opened = []

    def make(clock: pd.Timestamp, **tolerances: timedelta) -> Scorer:
        paths = served_bank.fresh_paths(tmp_path / f"serving-{len(opened)}")
        online, log = OnlineFeatureStore(paths.online), DecisionLog(paths.decisions, chain_key=CHAIN_KEY)
        opened.extend([online, log])
        return Scorer(model, online, log, served_bank.keys, clock=lambda: clock.to_pydatetime(), **tolerances)

    yield make
    for thing in opened:
        thing.close()


def _dated(row: dict, at: pd.Timestamp, application_id: str) -> dict:
    return {**row, "application_id": application_id, "applied_at": at.tz_convert(BEIJING).isoformat()}


def _two_branches(served_bank) -> tuple[dict, dict]:
    """Two held-back applications of two branches."""
    first = served_bank.holdout[0]
    other = next(r for r in served_bank.holdout if r["branch_id"] != first["branch_id"])
    return first, other


def test_one_branch_s_future_dated_application_never_refuses_another_branch_s_honest_one(
    served_bank, scorer_at, now
):
    honest, pushy = _two_branches(served_bank)
    # even with the future bound as wide as the backdating one, the dates taken are the clock's
    wide = scorer_at(now, future_tolerance=timedelta(seconds=600))
    ahead = wide.score_application(_dated(pushy, now + timedelta(seconds=599), "AHEAD-1"), key_id="branch-b")
    assert ahead["application_id"] == "AHEAD-1"
    answer = wide.score_application(_dated(honest, now - timedelta(seconds=5), "HONEST-1"), key_id="branch-a")
    assert answer["application_id"] == "HONEST-1"
    # with the default bounds, the far-ahead one is itself refused, and changes nothing either
    scorer = scorer_at(now)
    with contextlib.suppress(InvalidInput):
        scorer.score_application(_dated(pushy, now + timedelta(seconds=599), "AHEAD-2"), key_id="branch-b")
    honest_now = _dated(honest, now - timedelta(seconds=5), "HONEST-2")
    answer = scorer.score_application(honest_now, key_id="branch-a")
    assert answer["application_id"] == "HONEST-2"


def test_an_application_dated_before_the_clock_less_the_tolerance_is_refused_whatever_is_recorded(
    served_bank, scorer_at, now
):
    row = served_bank.holdout[0]
    scorer = scorer_at(now)  # nothing recorded after the state's history, which ends before `now`
    with pytest.raises(InvalidInput) as refused:
        scorer.score_application(_dated(row, now - DEFAULT_TOLERANCE - timedelta(minutes=1), "OLD-1"))
    (error,) = refused.value.errors
    assert error.field == "applied_at" and "before the server's clock" in error.reason
    assert "backfills go through `duanka ingest`" in error.reason
    near = _dated(row, now - DEFAULT_TOLERANCE + timedelta(minutes=1), "NEAR-1")
    assert scorer.score_application(near)["application_id"] == "NEAR-1"


def test_an_application_dated_after_the_clock_plus_the_future_tolerance_is_refused(
    served_bank, scorer_at, now
):
    row = served_bank.holdout[0]
    scorer = scorer_at(now)
    with pytest.raises(InvalidInput) as refused:
        scorer.score_application(_dated(row, now + DEFAULT_FUTURE_TOLERANCE + timedelta(seconds=1), "LATE-1"))
    (error,) = refused.value.errors
    assert error.field == "applied_at" and "after the server's clock" in error.reason
    within = _dated(row, now + DEFAULT_FUTURE_TOLERANCE - timedelta(seconds=1), "SOON-1")
    assert scorer.score_application(within)["application_id"] == "SOON-1"


def test_the_refusal_shows_no_time_another_caller_sent(served_bank, scorer_at, now):
    first, other = _two_branches(served_bank)
    scorer = scorer_at(now)
    recorded = now + timedelta(seconds=50)  # another branch's application, a little ahead
    scorer.score_application(_dated(other, recorded, "THEIRS-1"), key_id="branch-b")
    with pytest.raises(InvalidInput) as refused:
        scorer.score_application(_dated(first, recorded - timedelta(minutes=11), "MINE-1"), key_id="branch-a")
    (error,) = refused.value.errors
    for zone in ("UTC", BEIJING):
        local = recorded.tz_convert(zone)
        for text in (local.isoformat(timespec="seconds"), local.strftime("%H:%M:%S")):
            assert text not in error.reason
    shown = now.tz_convert(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    assert f"the server's clock ({shown} Beijing time)" in error.reason


def test_a_retry_of_an_earlier_answer_is_still_answered(served_bank, scorer_at, now):
    row = _dated(served_bank.holdout[0], now, "RETRY-1")
    clock = {"now": now}
    scorer = scorer_at(now)
    scorer.clock = lambda: clock["now"].to_pydatetime()
    first = scorer.score_application(row)
    clock["now"] = now + DEFAULT_TOLERANCE + timedelta(minutes=1)  # too late for a new one
    (event,) = prepare_applications([row], served_bank.keys)
    (again,) = scorer.score([event], key_id="k", request_id="retry")
    assert again.replayed and again.response == first


def test_only_the_out_of_time_items_of_a_batch_are_named(served_bank, scorer_at, now):
    row = served_bank.holdout[0]
    scorer = scorer_at(now)
    applications = [
        _dated(row, now, "B-OK"),
        _dated(row, now - DEFAULT_TOLERANCE - timedelta(minutes=1), "B-OLD"),
        _dated(row, now, "B-OK2"),
        _dated(row, now + timedelta(hours=1), "B-AHEAD"),
    ]
    events = prepare_applications(applications, served_bank.keys)
    with pytest.raises(InvalidInput) as refused:
        scorer.score(events, key_id="k", request_id="batch")
    assert [(e.item, e.field) for e in refused.value.errors] == [(1, "applied_at"), (3, "applied_at")]

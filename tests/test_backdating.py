"""The service scores openings as they happen: a backdated or future-dated application is refused."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import InvalidInput, prepare_applications
from duanka.serving.scorer import Scorer
from tests.factories import CHAIN_KEY


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def _at(row: dict) -> pd.Timestamp:
    return pd.Timestamp(row["applied_at"]).tz_convert("UTC")


@pytest.fixture
def scorer_at(served_bank, model, tmp_path):
    """A scorer whose clock reads the given instant, on a fresh copy of the state."""
    opened = []

    def make(now: pd.Timestamp) -> Scorer:
        paths = served_bank.fresh_paths(tmp_path / f"serving-{len(opened)}")
        online, log = OnlineFeatureStore(paths.online), DecisionLog(paths.decisions, chain_key=CHAIN_KEY)
        opened.extend([online, log])
        return Scorer(model, online, log, served_bank.keys, clock=lambda: now.to_pydatetime())

    yield make
    for thing in opened:
        thing.close()


def _pair(served_bank) -> tuple[dict, dict]:
    """Two held-back applications more than 10 minutes apart, earlier first."""
    rows = served_bank.holdout
    later = next(r for r in rows if _at(r) - _at(rows[0]) > timedelta(minutes=30))
    return rows[0], later


def test_an_application_dated_well_before_the_newest_recorded_is_refused(served_bank, scorer_at):
    earlier, later = _pair(served_bank)
    scorer = scorer_at(_at(later) + timedelta(minutes=1))
    scorer.score_application(later)
    with pytest.raises(InvalidInput) as refused:
        scorer.score_application(earlier)
    (error,) = refused.value.errors
    assert error.field == "applied_at" and "backfills go through `duanka ingest`" in error.reason


def test_a_little_disorder_within_the_tolerance_is_scored(served_bank, scorer_at):
    earlier, later = _pair(served_bank)
    scorer = scorer_at(_at(later))
    scorer.score_application(later)
    nine_minutes_before = (_at(later) - timedelta(minutes=9)).isoformat()
    shifted = {**earlier, "application_id": "NEAR-1", "applied_at": nine_minutes_before}
    assert scorer.score_application(shifted)["application_id"] == "NEAR-1"


def test_an_application_dated_after_the_clock_is_refused(served_bank, scorer_at):
    earlier, _ = _pair(served_bank)
    scorer = scorer_at(_at(earlier) - timedelta(minutes=11))
    with pytest.raises(InvalidInput) as refused:
        scorer.score_application(earlier)
    assert "after the server's clock" in refused.value.errors[0].reason
    ok = scorer_at(_at(earlier) - timedelta(minutes=9))
    assert ok.score_application(earlier)["application_id"] == earlier["application_id"]


def test_a_retry_of_an_earlier_answer_is_still_answered(served_bank, scorer_at):
    earlier, later = _pair(served_bank)
    scorer = scorer_at(_at(later) + timedelta(minutes=1))
    first = scorer.score_application(earlier)
    scorer.score_application(later)
    (event,) = prepare_applications([earlier], served_bank.keys)
    (again,) = scorer.score([event], key_id="k", request_id="retry")
    assert again.replayed and again.response == first


def test_only_the_out_of_time_items_of_a_batch_are_named(served_bank, scorer_at):
    earlier, later = _pair(served_bank)
    scorer = scorer_at(_at(later) + timedelta(minutes=1))
    scorer.score_application(later)
    events = prepare_applications(
        [{**later, "application_id": "B-OK"}, earlier, {**later, "application_id": "B-OK2"}], served_bank.keys
    )
    with pytest.raises(InvalidInput) as refused:
        scorer.score(events, key_id="k", request_id="batch")
    assert [(e.item, e.field) for e in refused.value.errors] == [(1, "applied_at")]

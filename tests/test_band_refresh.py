"""Band cuts refreshed each local day from the scores before it: in training, batch and the service."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from duanka.data.config import get_settings
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog, DecisionRow
from duanka.serving.band_refresh import RecentScores
from duanka.serving.batch import score_features, score_period
from duanka.serving.model_source import ModelSource
from duanka.serving.scorer import Scorer
from duanka.training.bands import ALERT_BUDGET, Bands, DailyBands, RefreshPolicy, day_start, local_days
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY

FALLBACK = Bands(critical=0.9, high=0.8, medium=0.7)
POLICY = RefreshPolicy(window_days=14, min_scores=100)
DAY = np.datetime64("2025-03-10", "D")


def _uniform_day(rng: np.random.Generator, day: np.datetime64, n: int, scale: float) -> pd.DataFrame:
    """``n`` openings spread over local ``day``, scores uniform on ``[0, scale)``."""
    at = day_start(day) + pd.to_timedelta(rng.uniform(0, 86_400, n), unit="s")
    return pd.DataFrame({"applied_at": at, "score": rng.uniform(0, scale, n)})


def test_a_days_cuts_read_only_the_window_before_its_local_midnight():
    midnight = day_start(DAY)
    inside = pd.Series([midnight - pd.Timedelta(days=14), midnight - pd.Timedelta(microseconds=1)])
    outside = pd.Series([midnight - pd.Timedelta(days=14, microseconds=1), midnight])
    rng = np.random.default_rng(0)
    window = rng.uniform(0, 1, 200)
    at = pd.concat([inside.repeat(100), outside.repeat(100)], ignore_index=True)
    scores = np.concatenate([window, np.full(200, 50.0)])  # what lies outside would move every cut
    cuts = DailyBands.from_scores(FALLBACK, at, scores, [DAY], POLICY).for_day(DAY)
    assert cuts == Bands.from_budget(window)
    # 00:00 on DAY in Shanghai is 16:00 UTC the day before
    assert local_days(pd.Series([midnight]))[0] == DAY
    assert local_days(pd.Series([midnight - pd.Timedelta(microseconds=1)]))[0] == DAY - 1


def test_a_day_with_too_few_scores_in_its_window_keeps_the_cuts_of_training():
    rng = np.random.default_rng(1)
    history = _uniform_day(rng, DAY - 1, POLICY.min_scores - 1, 1.0)
    daily = DailyBands.from_scores(FALLBACK, history["applied_at"], history["score"], [DAY], POLICY)
    assert daily.for_day(DAY) == FALLBACK
    assert daily.describe()["refreshed_days"] == 0


def test_assign_matches_a_slow_reference_loop_over_each_opening():
    rng = np.random.default_rng(2)
    days = [DAY + i for i in range(-20, 10)]
    frame = pd.concat(
        [_uniform_day(rng, d, 40, 1.0 + 0.1 * i) for i, d in enumerate(days)], ignore_index=True
    )
    scored = frame.loc[frame["applied_at"] >= day_start(DAY)]
    daily = DailyBands.from_scores(
        FALLBACK, frame["applied_at"], frame["score"], np.unique(local_days(scored["applied_at"])), POLICY
    )
    got = daily.assign(scored["score"].to_numpy(), scored["applied_at"])
    for band, (_, row) in zip(got, scored.iterrows(), strict=True):
        midnight = day_start(local_days(pd.Series([row["applied_at"]]))[0])
        before = frame.loc[
            (frame["applied_at"] >= midnight - pd.Timedelta(days=14)) & (frame["applied_at"] < midnight),
            "score",
        ]
        cuts = Bands.from_budget(before.to_numpy()) if len(before) >= POLICY.min_scores else FALLBACK
        assert band == cuts.assign(np.array([row["score"]]))[0]


def test_refreshed_cuts_hold_the_budget_where_cuts_fixed_at_training_drift():
    """From day 20 every score is 30 % higher (a new channel, a changed mix): the fixed cuts alert
    far beyond the budget, the refreshed ones hold it once their window has moved past the shift."""
    rng = np.random.default_rng(3)
    days = [DAY + i for i in range(60)]
    frame = pd.concat(
        [_uniform_day(rng, d, 400, 1.0 if i < 20 else 1.3) for i, d in enumerate(days)], ignore_index=True
    )
    trained = Bands.from_budget(frame.loc[frame["applied_at"] < day_start(DAY + 14), "score"].to_numpy())
    later = frame.loc[frame["applied_at"] >= day_start(DAY + 34)]
    daily = DailyBands.from_scores(
        trained, frame["applied_at"], frame["score"], np.unique(local_days(later["applied_at"])), POLICY
    )
    refreshed = daily.assign(later["score"].to_numpy(), later["applied_at"])
    fixed = trained.assign(later["score"].to_numpy())
    budget = ALERT_BUDGET["critical"] + ALERT_BUDGET["high"]
    assert np.isin(fixed, ["critical", "high"]).mean() > 5 * budget
    assert np.isin(refreshed, ["critical", "high"]).mean() == pytest.approx(budget, rel=0.5)


@pytest.fixture
def low_minimum(monkeypatch):
    """A policy that refreshes from 200 scores, so a small test bank's days are refreshed."""
    monkeypatch.setenv("DUANKA_BAND_REFRESH_MIN_SCORES", "200")
    get_settings.cache_clear()
    yield RefreshPolicy.configured()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def test_batch_scoring_bands_each_opening_by_the_cuts_of_its_day(served_bank, model, low_minimum):
    start = pd.Timestamp("2025-01-01", tz="Asia/Shanghai").tz_convert("UTC")
    end = pd.Timestamp("2025-01-15", tz="Asia/Shanghai").tz_convert("UTC")
    scored = score_period(served_bank.store, start, end, model).set_index("application_id")
    features = build_features(served_bank.store.applications(), served_bank.store.labels())
    every = score_features(features, model).assign(applied_at=features["applied_at"].to_numpy())
    chosen = every.loc[(every["applied_at"] >= start) & (every["applied_at"] < end)]
    refreshed = 0
    for day, rows in chosen.groupby(local_days(chosen["applied_at"])):
        midnight = day_start(day)
        window = every.loc[
            (every["applied_at"] >= midnight - low_minimum.window) & (every["applied_at"] < midnight), "score"
        ]
        assert len(window) >= low_minimum.min_scores  # the test reaches the refreshed path
        cuts = Bands.from_budget(window.to_numpy())
        refreshed += cuts != model.registered.bundle.bands
        want = pd.Series(cuts.assign(rows["score"].to_numpy()), index=rows["application_id"])
        got = scored.loc[want.index, "band"]
        listed = got == "blocked"
        assert (got[~listed] == want[~listed]).all()
    assert refreshed > 0


def _seed(
    log: DecisionLog, booster: str, at: datetime, scores: np.ndarray, *, replayed: bool = False
) -> None:
    log.record(
        DecisionRow(
            request_id="seed",
            application_id=f"seed-{booster[:4]}-{replayed}-{i}",
            key_id="k",
            decided_at=at.isoformat(timespec="microseconds"),
            model_name="duanka",
            model_version="1",
            booster_sha256=booster,
            score=float(s),
            band="low",
            reason_codes="",
            latency_ms=1.0,
            replayed=replayed,
        )
        for i, s in enumerate(scores)
    )


def test_the_service_reads_back_only_its_boosters_fresh_scores_of_the_window(tmp_path, low_minimum):
    now = datetime(2025, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    rng = np.random.default_rng(4)
    ours = rng.uniform(0, 1, 300)
    with DecisionLog(tmp_path / "decisions.db", chain_key=CHAIN_KEY) as log:
        _seed(log, "a" * 64, now - timedelta(days=1), ours)
        _seed(log, "a" * 64, now - timedelta(days=1), np.full(300, 9.0), replayed=True)
        _seed(log, "b" * 64, now - timedelta(days=1), np.full(300, 9.0))
        _seed(log, "a" * 64, now - timedelta(days=20), np.full(300, 9.0))
        _seed(log, "a" * 64, now - timedelta(hours=1), np.full(300, 9.0))  # today: counts from tomorrow
        recent = RecentScores.from_log(log, "a" * 64, FALLBACK, now=now)
    cuts, audited = recent.cuts_at(now)
    assert cuts == Bands.from_budget(ours)
    assert audited == {"day": "2025-03-10", "source": "refreshed", "scores_in_window": 300, **cuts.to_dict()}
    assert recent.cuts_at(now + timedelta(hours=1)) == (cuts, None)  # audited once a day


def test_new_cuts_take_effect_at_local_midnight_not_a_microsecond_earlier(tmp_path, low_minimum):
    now = datetime(2025, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    midnight = datetime(2025, 3, 10, 16, 0, tzinfo=UTC)  # 00:00 on 11 March in Shanghai
    with DecisionLog(tmp_path / "decisions.db", chain_key=CHAIN_KEY) as log:
        _seed(log, "a" * 64, now - timedelta(days=1), np.random.default_rng(5).uniform(0, 1, 300))
        recent = RecentScores.from_log(log, "a" * 64, FALLBACK, now=now)
    cuts, _ = recent.cuts_at(now)
    recent.add(now, list(np.full(300, 9.0)))  # today's scores count from tomorrow on
    assert recent.cuts_at(midnight - timedelta(microseconds=1)) == (cuts, None)
    tomorrow, audited = recent.cuts_at(midnight)
    assert audited is not None and audited["day"] == "2025-03-11"
    assert tomorrow != cuts


def test_the_service_bands_by_the_refreshed_cuts_and_audits_them(served_bank, model, tmp_path, low_minimum):
    now = replay_clock()
    paths = served_bank.fresh_paths(tmp_path / "serving")
    # yesterday this booster gave scores far above anything today's application can get
    with DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        _seed(log, model.booster_sha256, now - timedelta(days=1), np.linspace(2.0, 3.0, 400))
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        scorer = Scorer(model, online, log, served_bank.keys, clock=replay_clock, tolerance=REPLAY_TOLERANCE)
        answer = scorer.score_application(served_bank.holdout[0])
        events = log._con.execute("SELECT detail FROM events WHERE kind = 'band_cuts'").fetchall()
    assert answer["model_band"] == "low"
    (detail,) = (json.loads(d) for (d,) in events)
    assert detail["source"] == "refreshed" and detail["critical"] > 2.9
    with sqlite3.connect(paths.decisions) as con:
        assert con.execute(
            "SELECT band FROM decisions WHERE application_id NOT LIKE 'seed-%'"
        ).fetchall() == [(answer["band"],)]

"""The online state is not fsynced per application; the decision record is its redo log.

A power cut cannot be caused in a test, but its effect on a WAL file can: the commits
since the last sync are gone. Here that is done by putting back a copy of the state
files taken at the last sync, after more applications were answered.
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications, prepare_labels
from duanka.serving.scorer import Scorer
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY

NEVER = 3_600.0  # no periodic sync within a test: only close() syncs


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def _open(served_bank, model, paths, every_s: float = NEVER) -> Scorer:
    online = OnlineFeatureStore(paths.online, durable=False)
    log = DecisionLog(paths.decisions, chain_key=CHAIN_KEY)
    return Scorer(
        model,
        online,
        log,
        served_bank.keys,
        state_sync_every_s=every_s,
        clock=replay_clock,
        tolerance=REPLAY_TOLERANCE,
    )


def _shut(scorer: Scorer) -> None:
    scorer.online.close()
    scorer.log.close()


def _state_files(paths) -> list:
    return [paths.online.with_name(paths.online.name + suffix) for suffix in ("", "-wal", "-shm")]


def _held(paths, ids: list[str]) -> set[str]:
    with sqlite3.connect(paths.online) as con:
        marks = ",".join("?" * len(ids))
        return {
            r[0]
            for r in con.execute(f"SELECT application_id FROM apps WHERE application_id IN ({marks})", ids)
        }


def test_after_a_clean_stop_there_is_nothing_to_redo(served_bank, model, tmp_path):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    scorer = _open(served_bank, model, paths)
    for row in served_bank.holdout[:5]:
        scorer.score_application(row)
    assert len(scorer.log.unsynced_events()) == 5  # answered, not yet known synced
    scorer.close()
    assert scorer.log.unsynced_events() == []
    _shut(scorer)


def test_answers_lost_from_the_state_at_a_power_cut_are_recorded_again(served_bank, model, tmp_path):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    rows = served_bank.holdout
    first, lost = rows[:5], rows[5:12]
    scorer = _open(served_bank, model, paths)
    for row in first:
        scorer.score_application(row)
    scorer.close()
    _shut(scorer)
    synced = tmp_path / "synced"
    synced.mkdir()
    for f in _state_files(paths):
        if f.exists():
            shutil.copy(f, synced / f.name)

    scorer = _open(served_bank, model, paths)
    for row in lost:
        scorer.score_application(row)
    target = prepare_applications([rows[20]], served_bank.keys)[0]
    uninterrupted = scorer.online.features_for(target)
    _shut(scorer)  # the process stops without syncing; then the power goes
    for f in _state_files(paths):
        f.unlink(missing_ok=True)
        if (synced / f.name).exists():
            shutil.copy(synced / f.name, f)
    lost_ids = [r["application_id"] for r in lost]
    assert _held(paths, lost_ids) == set()  # the state really lost them

    scorer = _open(served_bank, model, paths)
    assert [e["application_id"] for e in scorer.log.unsynced_events()] == lost_ids
    assert scorer.redo() == len(lost)
    assert scorer.redo() == 0  # idempotent: a second start changes nothing
    np.testing.assert_array_equal(scorer.online.features_for(target), uninterrupted)
    assert len(uninterrupted) == len(MODEL_FEATURES)
    _shut(scorer)
    assert _held(paths, lost_ids) == set(lost_ids)


def test_the_state_is_synced_and_noted_as_answers_go_on(served_bank, model, tmp_path):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    scorer = _open(served_bank, model, paths, every_s=0.0)  # a sync asked for after every answer
    for row in served_bank.holdout[:4]:
        scorer.score_application(row)
        scorer.online._syncer.wait(scorer._syncing[0])  # its fsync done before the next answer
    # Each answer's record notes the sync made after the one before: only the last is pending.
    assert [e["application_id"] for e in scorer.log.unsynced_events()] == [
        served_bank.holdout[3]["application_id"]
    ]
    _shut(scorer)


def test_a_sync_is_noted_only_once_its_fsync_is_done(served_bank, model, tmp_path, monkeypatch):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    scorer = _open(served_bank, model, paths, every_s=0.0)
    on_disk = False
    monkeypatch.setattr(scorer.online, "synced", lambda ticket: on_disk)
    rows = served_bank.holdout[:4]
    for row in rows[:3]:
        scorer.score_application(row)
    # three syncs asked for, none done: a power cut now must redo all three answers
    assert [e["application_id"] for e in scorer.log.unsynced_events()] == [
        r["application_id"] for r in rows[:3]
    ]
    on_disk = True
    scorer.score_application(rows[3])  # its record notes the sync asked for after the third
    assert [e["application_id"] for e in scorer.log.unsynced_events()] == [rows[3]["application_id"]]
    _shut(scorer)


def test_confirmations_are_synced_before_they_are_acknowledged(served_bank, model, tmp_path, monkeypatch):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    scorer = _open(served_bank, model, paths)
    synced: list[int] = []
    real_sync = scorer.online.sync
    monkeypatch.setattr(scorer.online, "sync", lambda: (synced.append(1), real_sync()))
    row = served_bank.holdout[0]
    scorer.score_application(row)
    labels = [
        {"application_id": row["application_id"], "confirmed_at": "2025-05-01", "source": "police_notice"}
    ]
    scorer.add_labels(prepare_labels(labels), key_id="test", request_id="r1")
    assert synced == [1]
    _shut(scorer)

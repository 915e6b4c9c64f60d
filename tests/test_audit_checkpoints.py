"""The decision record checkpoints in the background and still loses nothing."""

from __future__ import annotations

import sqlite3

from duanka.serving.audit import DecisionLog
from tests.factories import CHAIN_KEY


def test_a_background_checkpointer_keeps_every_event_and_a_sound_file(tmp_path):
    path = tmp_path / "decisions.db"
    with DecisionLog(path, chain_key=CHAIN_KEY, checkpoint_every_s=0.01) as log:
        for i in range(1_500):
            log.event("bench", {"application_id": f"A{i}"}, key_id="k", request_id=f"r{i}")
        # A pass that began after the last write copies every frame of the log.
        settled = log._checkpointer.settled(timeout_s=30)
        assert settled is not None
        busy, frames, done = settled
        assert (busy, done) == (0, frames) and frames > 0
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM events WHERE kind = 'bench'").fetchone()[0] == 1_500
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

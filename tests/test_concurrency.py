"""Concurrent callers on one state: no lost update, no "database is locked", one record per application.

The service has one writer: every SQLite write (state and decision record) runs on one scoring
thread in arrival order (serving/api.py), so concurrent requests queue instead of contending for
the lock. Readers (an audit export, readiness, an operator's sqlite3 shell) use WAL snapshots.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from duanka.serving.audit import export
from tests.conftest import service_client

THREADS = 8
PER_THREAD = 12
EXPORTS = 5


def _exported(path: Path) -> pd.DataFrame:
    """An audit export's rows in record order, as written."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def api(served_bank, tmp_path_factory):
    with service_client(served_bank, tmp_path_factory.mktemp("concurrency") / "serving") as service:
        yield service


def test_concurrent_scores_labels_and_readers_lose_nothing(api, served_bank, tmp_path):
    client, auth, paths = api
    holdout = served_bank.holdout
    decided_once = threading.Event()

    def caller(t: int) -> list[tuple[int, str]]:
        answers = []
        for i in range(PER_THREAD):
            n = t * PER_THREAD + i
            row = {**holdout[n % len(holdout)], "application_id": f"CONC{n:04d}"}
            r = client.post("/v1/score", json=row, headers=auth)
            answers.append((r.status_code, r.text))
            decided_once.set()
            if i % 4 == 3:  # confirm one of this thread's earlier applications
                label = {
                    "application_id": f"CONC{n - 1:04d}",
                    "confirmed_at": "2025-06-01",
                    "source": "investigation",
                }
                r = client.post("/v1/labels", json={"labels": [label]}, headers=auth)
                answers.append((r.status_code, r.text))
            r = client.get("/readyz")
            answers.append((r.status_code, r.text))
        return answers

    def reader() -> list[pd.DataFrame]:
        # an auditor exporting and an operator reading the state while the service writes
        assert decided_once.wait(timeout=120), "no decision was answered"
        exports = []
        for k in range(EXPORTS):
            out = tmp_path / f"audit{k}.csv"
            rows = export(paths.decisions, out)
            exports.append(_exported(out))
            assert len(exports[-1]) == rows
            # Closed here, not left to the garbage collector: a connection's statement cache holds
            # it in a reference cycle, and the collector closing it on another thread while the
            # next one opens takes the file's PENDING lock for a moment, refusing that reader.
            with closing(sqlite3.connect(paths.online, timeout=0)) as con:  # timeout 0: a lock would raise
                con.execute("SELECT count(*) FROM apps").fetchone()
        return exports

    with ThreadPoolExecutor(THREADS + 1) as pool:
        exporting = pool.submit(reader)
        answers = [a for f in [pool.submit(caller, t) for t in range(THREADS)] for a in f.result()]
        exports = exporting.result()

    # each export is a consistent snapshot: the first rows of the record as it ends, chain values included
    export(paths.decisions, tmp_path / "final.csv")
    final = _exported(tmp_path / "final.csv")
    assert len(final) == THREADS * PER_THREAD
    assert len(exports[0]) >= 1  # taken after a decision was answered, so after it was recorded
    for snapshot in exports:
        assert snapshot.equals(final.iloc[: len(snapshot)])
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    assert not any("locked" in text for _, text in answers)
    scored = {f"CONC{n:04d}" for n in range(THREADS * PER_THREAD)}
    confirmed = {f"CONC{t * PER_THREAD + i - 1:04d}" for t in range(THREADS) for i in range(3, PER_THREAD, 4)}
    with sqlite3.connect(paths.online) as con:
        in_state = dict(
            con.execute(
                "SELECT application_id, count(*) FROM apps WHERE application_id LIKE 'CONC%' GROUP BY 1"
            )
        )
        labelled = {
            r[0] for r in con.execute("SELECT application_id FROM labels WHERE application_id LIKE 'CONC%'")
        }
    with sqlite3.connect(paths.decisions) as con:
        decided = dict(
            con.execute(
                "SELECT application_id, count(*) FROM decisions WHERE application_id LIKE 'CONC%' GROUP BY 1"
            )
        )
    assert in_state == dict.fromkeys(scored, 1)
    assert decided == dict.fromkeys(scored, 1)
    assert labelled == confirmed


def test_racing_retries_of_one_application_make_one_decision(api, served_bank):
    client, auth, paths = api
    row = {**served_bank.holdout[5], "application_id": "RACE0001"}
    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/score", json=row, headers=auth), range(THREADS)))
    bodies = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * THREADS
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * (THREADS - 1)
    assert len({b["score"] for b in bodies}) == 1
    with sqlite3.connect(paths.decisions) as con:
        rows = con.execute("SELECT replayed FROM decisions WHERE application_id = 'RACE0001'").fetchall()
    assert sorted(rows) == [(0,)] + [(1,)] * (THREADS - 1)

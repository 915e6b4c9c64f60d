"""Concurrent callers on one state: no lost update, no "database is locked", one record per application.

The service has one writer: every SQLite write (state and decision record) runs on one scoring
thread in arrival order (serving/api.py), so concurrent requests queue instead of contending for
the lock. Readers (an audit export, readiness, an operator's sqlite3 shell) use WAL snapshots.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from duanka.serving.audit import export
from tests.conftest import service_client

THREADS = 8
PER_THREAD = 12


@pytest.fixture(scope="module")
def api(served_bank, tmp_path_factory):
    with service_client(served_bank, tmp_path_factory.mktemp("concurrency") / "serving") as service:
        yield service


def test_concurrent_scores_labels_and_readers_lose_nothing(api, served_bank, tmp_path):
    client, auth, paths = api
    holdout = served_bank.holdout

    def caller(t: int) -> list[tuple[int, str]]:
        answers = []
        for i in range(PER_THREAD):
            n = t * PER_THREAD + i
            row = {**holdout[n % len(holdout)], "application_id": f"CONC{n:04d}"}
            r = client.post("/v1/score", json=row, headers=auth)
            answers.append((r.status_code, r.text))
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

    def reader() -> int:
        # an auditor exporting and an operator reading the state while the service writes
        exported = 0
        for k in range(5):
            exported = export(paths.decisions, tmp_path / f"audit{k}.csv")
            with sqlite3.connect(paths.online, timeout=0) as con:
                con.execute("SELECT count(*) FROM apps").fetchone()
        return exported

    with ThreadPoolExecutor(THREADS + 1) as pool:
        exports = pool.submit(reader)
        answers = [a for f in [pool.submit(caller, t) for t in range(THREADS)] for a in f.result()]
        assert exports.result() >= 0

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

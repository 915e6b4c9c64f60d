"""Raw identifiers go in at every entry point and come out nowhere.

Known raw values (the bank's exports, its joint-punishment list among them) pass through ingest
(with a quarantine), features, train, report, batch scoring, the service (the watchlist feed
included) and the audit export; then every file written (Parquet decoded,
SQLite tables dumped as text, MLflow's store and artifacts), every log line, command output and
HTTP response is searched for them. Training is the session's (``served_bank``): its event store,
registry and artifacts are scanned rather than rebuilt.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.contract import PERSONAL_COLUMNS
from duanka.serving.api import create_app
from duanka.serving.keys import KeyFile
from duanka.serving.lifecycle import ServiceConfig
from duanka.serving.model_source import ModelSource
from tests.conftest import REPLAY_TOLERANCE, SECRET, replay_clock
from tests.privacy import leaks, raw_identifiers

SERVED = 40  # holdout applications sent to the service (the batch scores all of them)


def _sqlite_dumps(folder: Path) -> Iterable[str]:
    """Every SQLite database's tables as SQL text: a value split across pages is whole again."""
    for path in sorted(folder.rglob("*.db")):
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield "\n".join(con.iterdump())
        finally:
            con.close()


def _secrets(served_bank) -> set[str]:
    """The served applications' identifiers, and a seeded sample of the ingested history's.

    Every value would make the scan cost minutes (each is searched for in tens of MB of text);
    a few hundred of each personal column find a leak of that column as surely.
    """
    history = pd.read_csv(served_bank.root / "history.csv", dtype=str, keep_default_na=False)
    rng = random.Random(5)
    sample = set()
    for column in PERSONAL_COLUMNS:
        values = sorted({v.strip() for v in history[column] if len(v.strip()) >= 6})
        sample |= set(rng.sample(values, min(40, len(values))))
    served = {
        row[c].strip()
        for row in served_bank.holdout[:SERVED]
        for c in PERSONAL_COLUMNS
        if len(row[c] or "") >= 6
    }
    return sample | served


@pytest.fixture(scope="module")
def outputs(served_bank, tmp_path_factory) -> Iterator[tuple[Path, list[str]]]:
    """Run every entry point; the folder they wrote to and every text they printed or answered."""
    with pytest.MonkeyPatch.context() as env:  # what `duanka_env` does, for the whole module
        env.setenv("DUANKA_MODELS_DIR", str(served_bank.settings.models_dir))
        env.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        try:
            yield _run_every_entry_point(served_bank, tmp_path_factory.mktemp("privacy"), env)
        finally:
            get_settings.cache_clear()
            served_bank.client()


def _run_every_entry_point(served_bank, out: Path, env: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    texts: list[str] = []
    runner = CliRunner()

    def duanka(*args: str) -> None:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        texts.append(result.output)

    # ingest, with rows that break the contract: the quarantine must name the rule, not the value
    bad = pd.read_csv(served_bank.holdout_csv, dtype=str, keep_default_na=False)
    bad.loc[:9, "phone"] = bad.loc[:9, "phone"].str[:-1]
    bad.loc[10:19, "id_number"] = bad.loc[10:19, "id_number"].str[:-1] + "Y"
    bad.to_csv(out / "incoming.csv", index=False)
    listings = pd.read_csv(_watchlist(served_bank), dtype=str, keep_default_na=False)
    listings.loc[:4, "id_number"] = listings.loc[:4, "id_number"].str[:-1] + "Y"
    listings.to_csv(out / "watchlist-incoming.csv", index=False)
    duanka(
        "ingest",
        "--applications",
        str(out / "incoming.csv"),
        "--watchlist",
        str(out / "watchlist-incoming.csv"),
        "--data",
        str(out / "store"),
    )
    assert (out / "store" / "quarantine.csv").stat().st_size > 0
    duanka(
        "features",
        "--data",
        str(served_bank.store.root),
        "--as-of",
        "2025-03-01",
        "--out",
        str(out / "f.parquet"),
    )
    duanka("report", "--model", served_bank.uri, "--out", str(out / "report.html"))
    duanka(
        "score",
        "--data",
        str(served_bank.store.root),
        "--applications",
        str(served_bank.holdout_csv),
        "--out",
        str(out / "scores.csv"),
        "--explain-all",
    )

    # the service runs on a copy of the store holding the bank's watchlist, and is fed more of it
    served = served_bank.copy_store(out / "served-store")
    duanka("ingest", "--watchlist", str(_watchlist(served_bank)), "--data", str(served.root))
    paths = served_bank.fresh_paths(out / "serving")
    token = KeyFile(paths.keys).create()[1]
    admin = KeyFile(paths.keys).create(admin=True)[1]
    source = ModelSource(served_bank.uri, served_bank.client())
    config = ServiceConfig(
        tolerance=REPLAY_TOLERANCE,
        clock=replay_clock,
        source=source,
        model=source.load(),
        keys=served_bank.keys,
        store=served,
        paths=paths,
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # every log record of every library, at every level
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, root.level = root.level, logging.DEBUG
    try:
        with TestClient(create_app(config)) as client:
            auth = {"Authorization": f"Bearer {token}"}
            for row in served_bank.holdout[:SERVED]:
                texts.append(client.post("/v1/score", json=row, headers=auth).text)
            broken = {**served_bank.holdout[0], "application_id": "PRIV-BAD", "phone": "1" * 12}
            texts.append(client.post("/v1/score", json=broken, headers=auth).text)
            texts.append(client.post("/v1/score/batch", json={"applications": [broken]}, headers=auth).text)
            feed = [
                {"id_number": row["id_number"], "listed_at": "2024-01-01", "source": "bank_internal"}
                for row in served_bank.holdout[SERVED : SERVED + 10]
            ]
            admin_auth = {"Authorization": f"Bearer {admin}"}
            for listings_sent in (feed, [{**feed[0], "id_number": feed[0]["id_number"][:-1]}]):
                answer = client.post("/v1/watchlist", json={"listings": listings_sent}, headers=admin_auth)
                texts.append(answer.text)
            for row in served_bank.holdout[SERVED : SERVED + 10]:
                texts.append(client.post("/v1/score", json=row, headers=auth).text)
            texts.append(client.get("/metrics").text)
    finally:
        root.removeHandler(handler)
        root.level = old_level
    texts += [f"{r.getMessage()} {r.exc_text or ''}" for r in records]
    env.setenv("DUANKA_AUDIT_DB", str(paths.decisions))
    get_settings.cache_clear()
    duanka("audit", "export", "--out", str(out / "audit.parquet"))
    duanka("audit", "export", "--out", str(out / "events.csv"), "--table", "events")
    return out, texts


def _watchlist(served_bank) -> Path:
    """The generated bank's joint-punishment list (its people confirmed mules of the history)."""
    return served_bank.root / "bank" / "watchlist.csv"


def _listed(served_bank) -> set[str]:
    """Every listed person's ID number, and the holdout people the service is fed as listings."""
    fed = {row["id_number"].strip() for row in served_bank.holdout[SERVED : SERVED + 10]}
    return raw_identifiers(_watchlist(served_bank)) | fed


def test_the_seeded_values_are_really_in_the_inputs(served_bank):
    # the scan below proves something only if what it looks for went in
    inputs = raw_identifiers(served_bank.root / "history.csv") | raw_identifiers(served_bank.holdout_csv)
    assert _secrets(served_bank) <= inputs and len(_secrets(served_bank)) > 200
    assert len(raw_identifiers(_watchlist(served_bank))) > 50


def _found(secrets: set[str], texts: Iterable[str]) -> list[str]:
    lowered = [s.lower() for s in secrets]
    return [s for text in texts for s in lowered if s in text.lower()]


def test_no_raw_identifier_in_any_output_file_database_artifact_log_or_response(served_bank, outputs):
    out, texts = outputs
    secrets = _secrets(served_bank) | _listed(served_bank)
    # the inputs themselves (the bank's exports, and our broken copy of one) hold raw values by design
    written = [out, served_bank.store.root, served_bank.settings.models_dir, served_bank.root / "online"]
    files = [
        leak for folder in written for leak in leaks(folder, secrets) if not leak.endswith("incoming.csv")
    ]
    assert files == []
    assert _found(secrets, (text for folder in written for text in _sqlite_dumps(folder))) == []
    assert _found(secrets, texts) == []


def test_the_scan_finds_a_value_hidden_in_a_database(served_bank, tmp_path):
    # a control: the same scan, on a database that does hold a raw value, finds it
    value = served_bank.holdout[0]["id_number"]
    with sqlite3.connect(tmp_path / "leaky.db") as con:
        con.execute("CREATE TABLE t (x TEXT)")
        con.execute("INSERT INTO t VALUES (?)", ("y" * 5000 + value.lower(),))  # past one page
    assert _found({value}, _sqlite_dumps(tmp_path)) == [value.lower()]


def test_every_entry_point_left_something_to_scan(served_bank, outputs):
    out, texts = outputs
    for name in ("quarantine.csv",):
        assert (out / "store" / name).exists()
    for name in ("f.parquet", "report.html", "scores.csv", "audit.parquet", "events.csv"):
        assert (out / name).stat().st_size > 0, name
    # the pseudonymised list was written where the scan looks, and the feed answered
    assert list((out / "store" / "watchlist").glob("part-*.parquet"))
    assert len(list((out / "served-store" / "watchlist").glob("part-*.parquet"))) == 2
    assert any('"stored":10' in t.replace(" ", "") for t in texts)
    assert any('"band":"blocked"' in t.replace(" ", "") for t in texts)
    assert any(re.search(r'"application_id":\s*"A', t) for t in texts)  # responses were collected
    assert list(served_bank.settings.models_dir.rglob("booster.txt"))  # MLflow artifacts are scanned

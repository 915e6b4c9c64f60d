"""Ingestion: the contract samples go in, bad rows go to quarantine, nothing raw is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.contract import APPLICATIONS, LABELS
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import Encoding
from duanka.data.store import EventStore, StoreKeyMismatch, StoreOutdated
from tests.privacy import leaks, raw_identifiers

FIXTURES = Path(__file__).parent / "fixtures" / "contract"
APPS = FIXTURES / "applications.csv"
LABEL_FILE = FIXTURES / "labels.csv"
INVALID = FIXTURES / "invalid_applications.csv"
KEY = "test-secret-" + "0123456789abcdef" * 3


@pytest.fixture
def keys() -> Pseudonymiser:
    return Pseudonymiser.from_secret(KEY.encode())


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "store")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_valid_sample_is_stored_with_pseudonyms_only(store, keys):
    report = ingest_file(APPS, APPLICATIONS, store, keys)
    assert (report.rows_read, report.stored, report.quarantined_rows) == (200, 200, 0)
    stored = store.applications().to_pandas()
    assert len(stored) == 200
    assert not {"id_number", "phone", "address", "device_id", "escort_id", "company_id"} & set(stored)
    assert stored["applicant_key"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert stored["applied_at"].dt.tz is not None
    naive = stored.set_index("application_id").loc["A000000002", "applied_at"]
    assert naive == pd.Timestamp("2024-01-01T09:45:07+08:00")


def test_reingesting_the_same_files_changes_nothing(store, keys):
    for path, table in ((APPS, APPLICATIONS), (LABEL_FILE, LABELS), (INVALID, APPLICATIONS)):
        ingest_file(path, table, store, keys)
    before = _snapshot(store.root)
    again = ingest_file(APPS, APPLICATIONS, store, keys)
    ingest_file(LABEL_FILE, LABELS, store, keys)
    ingest_file(INVALID, APPLICATIONS, store, keys)
    assert (again.stored, again.already_stored) == (0, 200)
    assert _snapshot(store.root) == before


def test_invalid_rows_are_quarantined_naming_their_column(store, keys):
    report = ingest_file(INVALID, APPLICATIONS, store, keys)
    assert report.stored == 0 and report.quarantined_rows == 17
    quarantine = pd.read_csv(store.quarantine_path, dtype=str)
    expected = pd.read_csv(INVALID, dtype=str)["expected_column"]
    named = quarantine.groupby(quarantine["row"].astype(int))["column"].agg(set)
    for row, column in enumerate(expected, start=1):
        assert column in named[row], row
    assert set(quarantine.columns) >= {"row", "application_id", "column", "reason"}


def test_a_conflicting_resend_is_quarantined_and_the_stored_row_kept(store, keys, tmp_path):
    ingest_file(APPS, APPLICATIONS, store, keys)
    changed = pd.read_csv(APPS, dtype=str, keep_default_na=False).head(3)
    changed.loc[0, "channel"] = "agent" if changed.loc[0, "channel"] != "agent" else "counter"
    resend = tmp_path / "resend.csv"
    changed.to_csv(resend, index=False)
    report = ingest_file(resend, APPLICATIONS, store, keys)
    assert (report.stored, report.already_stored, report.quarantined_rows) == (0, 2, 1)
    line = pd.read_csv(store.quarantine_path, dtype=str).iloc[-1]
    assert line["application_id"] == changed.loc[0, "application_id"]
    assert "conflicts" in line["reason"]
    assert len(store.applications()) == 200


def test_a_confirmation_dated_before_its_application_is_quarantined(store, keys, tmp_path):
    ingest_file(APPS, APPLICATIONS, store, keys)
    early = tmp_path / "labels.csv"
    early.write_text(
        "application_id,confirmed_at,source\nA000000001,2023-12-31T10:00:00+08:00,police_notice\n"
    )
    report = ingest_file(early, LABELS, store, keys)
    assert report.stored == 0 and report.quarantined_rows == 1
    assert pd.read_csv(store.quarantine_path).iloc[-1]["column"] == "confirmed_at"


def test_a_store_refuses_events_pseudonymised_under_another_key(store, keys):
    ingest_file(APPS, APPLICATIONS, store, keys)
    other = Pseudonymiser.from_secret(b"another-secret-" + b"x" * 40)
    with pytest.raises(StoreKeyMismatch, match="re-key"):
        ingest_file(LABEL_FILE, LABELS, store, other)


@pytest.fixture
def key_in_env(monkeypatch):
    """``KEY`` as the configured pseudonym key of a `duanka` command, read afresh."""
    from duanka.data.config import get_settings

    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_labels_for_applications_not_stored_yet_are_kept_and_counted(store, keys):
    early = ingest_file(LABEL_FILE, LABELS, store, keys)  # the labels' export came first
    assert early.stored > 0 and early.awaiting_application == early.stored
    ingest_file(APPS, APPLICATIONS, store, keys)
    other = store.root.parent / "other"
    in_order = EventStore(other)
    ingest_file(APPS, APPLICATIONS, in_order, keys)
    assert ingest_file(LABEL_FILE, LABELS, in_order, keys).awaiting_application == 0
    # the same labels, whichever came first
    assert sorted(store.labels()["application_id"].to_pylist()) == sorted(
        in_order.labels()["application_id"].to_pylist()
    )


def test_ingest_says_how_many_labels_wait_and_quarantines_only_when_there_are_some(tmp_path, key_in_env):
    data = str(tmp_path / "s")
    first = CliRunner().invoke(app, ["ingest", "--labels", str(LABEL_FILE), "--data", data])
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert "labels are for applications the store does not hold yet: stored, they apply once" in said
    assert "rows quarantined" not in said and "rows and reasons" not in said  # none were
    again = CliRunner().invoke(app, ["ingest", "--applications", str(APPS), "--data", data])
    assert "does not hold yet" not in " ".join(again.output.split())


def _outdated(store: EventStore) -> None:
    """Rewrite the store's application parts as an earlier duanka wrote them: without the
    columns it did not derive yet."""
    for part in store.parts("applications"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["branch_city", "address_province"]), part)


def test_a_store_from_before_a_derived_column_is_refused_not_read_with_blanks(store, keys, key_in_env):
    ingest_file(APPS, APPLICATIONS, store, keys)
    _outdated(store)
    with pytest.raises(StoreOutdated, match="before it derived address_province, branch_city; ingest"):
        store.applications()
    with pytest.raises(StoreOutdated):  # nothing is appended beside the old parts either
        ingest_file(APPS, APPLICATIONS, store, keys)
    result = CliRunner().invoke(app, ["ingest", "--applications", str(APPS), "--data", str(store.root)])
    assert result.exit_code == 1
    assert "ingest the bank's exports again into a new, empty store" in " ".join(result.output.split())


def test_ingest_without_a_key_refuses_and_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("DUANKA_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("DUANKA_PSEUDONYM_KEY_FILE", raising=False)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["ingest", "--applications", str(APPS), "--data", str(tmp_path / "s")])
    assert result.exit_code != 0
    assert "DUANKA_PSEUDONYM_KEY" in result.output
    assert not (tmp_path / "s").exists()


def test_no_raw_identifier_reaches_disk_or_output(tmp_path, monkeypatch):
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in (APPS, LABEL_FILE, INVALID):
        shutil.copy(f, inputs / f.name)
    out = tmp_path / "store"
    outputs = []
    for args in (
        ["--applications", str(inputs / APPS.name), "--labels", str(inputs / LABEL_FILE.name)],
        ["--applications", str(inputs / INVALID.name), "--max-quarantine-share", "1"],
    ):
        result = CliRunner().invoke(app, ["ingest", *args, "--data", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    secrets = raw_identifiers(APPS) | raw_identifiers(INVALID)
    assert len(secrets) > 500
    assert leaks(out, secrets, outputs) == []
    get_settings.cache_clear()


def test_slicing_a_file_changes_nothing_but_the_number_of_parts(tmp_path, keys):
    whole, sliced = EventStore(tmp_path / "whole"), EventStore(tmp_path / "sliced")
    ingest_file(APPS, APPLICATIONS, whole, keys)
    report = ingest_file(APPS, APPLICATIONS, sliced, keys, chunk_rows=37)
    assert (report.rows_read, report.stored, len(report.parts)) == (200, 200, 6)
    assert (
        sliced.applications().sort_by("application_id").equals(whole.applications().sort_by("application_id"))
    )


def test_a_repeat_in_a_later_slice_meets_the_first_in_the_store(tmp_path, keys):
    rows = pd.read_csv(APPS, dtype=str, keep_default_na=False).head(5)
    conflicting = rows.iloc[[1]].assign(channel="agent" if rows.iloc[1]["channel"] != "agent" else "counter")
    path = tmp_path / "repeats.csv"
    pd.concat([rows, rows.iloc[[0]], conflicting]).to_csv(path, index=False)
    store = EventStore(tmp_path / "store")
    report = ingest_file(path, APPLICATIONS, store, keys, chunk_rows=5)
    assert (report.stored, report.already_stored, report.quarantined_rows) == (5, 1, 1)
    line = pd.read_csv(store.quarantine_path).iloc[-1]
    assert (line["row"], line["application_id"]) == (7, rows.iloc[1]["application_id"])


def test_a_rows_digest_does_not_depend_on_the_other_rows_of_its_file(tmp_path, keys):
    rows = pd.read_csv(APPS, dtype=str, keep_default_na=False)
    alone = tmp_path / "alone.csv"
    rows.loc[rows["application_id"] == "A000000002"].to_csv(alone, index=False)  # whole-second, naive
    with_others, by_itself = EventStore(tmp_path / "a"), EventStore(tmp_path / "b")
    ingest_file(APPS, APPLICATIONS, with_others, keys)
    ingest_file(alone, APPLICATIONS, by_itself, keys)
    assert (
        by_itself.digests("applications")["A000000002"] == with_others.digests("applications")["A000000002"]
    )
    assert ingest_file(alone, APPLICATIONS, with_others, keys).already_stored == 1


def test_ingest_exits_1_when_a_file_is_mostly_quarantined(tmp_path, monkeypatch):
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    refused = runner.invoke(app, ["ingest", "--applications", str(INVALID), "--data", str(tmp_path / "s")])
    assert refused.exit_code == 1
    assert "--max-quarantine-share" in refused.output and "quarantine.csv" in refused.output
    fine = runner.invoke(app, ["ingest", "--applications", str(APPS), "--data", str(tmp_path / "s")])
    assert fine.exit_code == 0, fine.output
    get_settings.cache_clear()


def test_a_gb18030_export_reads_as_its_utf8_original(tmp_path, keys, monkeypatch):
    """What Excel writes on a Chinese Windows: refused as UTF-8 with the remedy, read with it."""
    text = APPS.read_text(encoding="utf-8")
    assert any(ord(c) > 127 for c in text)  # the sample holds Chinese text
    chinese = tmp_path / "applications_gbk.csv"
    chinese.write_bytes(text.encode("gb18030"))
    utf8_store, gbk_store = EventStore(tmp_path / "utf8"), EventStore(tmp_path / "gbk")
    ingest_file(APPS, APPLICATIONS, utf8_store, keys)
    ingest_file(chinese, APPLICATIONS, gbk_store, keys, encoding=Encoding.GB18030)
    assert gbk_store.digests("applications").equals(utf8_store.digests("applications"))

    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    refused = CliRunner().invoke(
        app, ["ingest", "--applications", str(chinese), "--data", str(tmp_path / "s")]
    )
    assert refused.exit_code == 1 and "--encoding gb18030" in refused.output
    get_settings.cache_clear()


def test_ingest_reports_its_progress_in_rows(tmp_path, keys):
    seen: list[tuple[int, int]] = []
    report = ingest_file(
        APPS, APPLICATIONS, EventStore(tmp_path / "s"), keys, chunk_rows=7, progress=lambda *p: seen.append(p)
    )
    total = report.rows_read
    assert total > 14 and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # forward, slice by slice
    assert len(seen) == -(-total // 7)


def test_a_ragged_row_is_quarantined_alone_by_the_data_row_the_quarantine_gives_it_mended(
    tmp_path, keys, monkeypatch
):
    rows = pd.read_csv(APPS, dtype=str, keep_default_na=False).head(8)
    rows.loc[1, "address"] = rows.loc[1, "address"][:6] + "\n" + rows.loc[1, "address"][6:]  # lines 3-4
    mended = tmp_path / "mended" / "applications.csv"
    mended.parent.mkdir()
    rows.assign(channel=rows["channel"].where(rows.index != 5, "pigeon")).to_csv(mended, index=False)
    address = rows.loc[5, "address"]
    text = mended.read_text(encoding="utf-8")
    assert text.count(address) == 1
    ragged = tmp_path / "applications.csv"
    ragged.write_text(text.replace(address, address[:4] + "," + address[4:]), encoding="utf-8")

    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    ran = CliRunner().invoke(app, ["ingest", "--applications", str(ragged), "--data", str(tmp_path / "s")])
    get_settings.cache_clear()
    assert ran.exit_code == 0, ran.output  # one row of eight: under --max-quarantine-share
    assert "1 rows quarantined" in " ".join(ran.output.split())
    line = pd.read_csv(tmp_path / "s" / "quarantine.csv", dtype=str).iloc[-1]
    assert (line["row"], line["column"]) == ("6", "*")
    assert line["reason"] == (
        "has 22 fields where the header has 21 (line 8 of the file); "
        "quote values that contain commas or line breaks"
    )
    assert EventStore(tmp_path / "s").applications().num_rows == 7  # nothing good is lost
    assert leaks(tmp_path / "s", raw_identifiers(mended), [ran.output]) == []

    # mended, the same row is found under the same number for its real defect
    store = EventStore(tmp_path / "store")
    report = ingest_file(mended, APPLICATIONS, store, keys)
    assert (report.rows_read, report.quarantined_rows) == (8, 1)
    line = pd.read_csv(store.quarantine_path, dtype=str).iloc[-1]
    assert (line["row"], line["column"]) == ("6", "channel")

"""The joint-punishment list: stored as pseudonyms, idempotent, ended by removals, applied point in time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.contract import APPLICATIONS, WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.watchlist import (
    EXPIRES_BEFORE_LISTED,
    StoredWatchlist,
    Watchlist,
    ingest_watchlist,
)
from duanka.serving.batch import SCORE_COLUMNS
from duanka.serving.rules import WATCHLIST_CODE, refuse_listed, watchlist_decision
from duanka.training.explain import load_catalogue, placeholders
from tests.privacy import leaks, raw_identifiers

FIXTURES = Path(__file__).parent / "fixtures" / "contract"
APPS = FIXTURES / "applications.csv"
KEY = "watchlist-secret-" + "0123456789abcdef" * 3
COLUMNS = list(WATCHLIST.names)
US = timedelta(microseconds=1)


@pytest.fixture
def keys() -> Pseudonymiser:
    return Pseudonymiser.from_secret(KEY.encode())


@pytest.fixture
def store(tmp_path: Path, keys: Pseudonymiser) -> EventStore:
    store = EventStore(tmp_path / "store")
    ingest_file(APPS, APPLICATIONS, store, keys)
    return store


@pytest.fixture
def people() -> list[str]:
    """ID numbers of the contract sample's applicants, each applying once."""
    apps = pd.read_csv(APPS, dtype=str, keep_default_na=False)
    once = apps["id_number"].str.upper().value_counts()
    return sorted(once.index[once == 1])[:6]


def _write(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_listed_person_has_the_applicant_key_of_their_applications(store, keys, people, tmp_path):
    listed = people[0]
    report = ingest_watchlist(
        _write(tmp_path / "w.csv", [(listed.lower(), "2024-01-01", "", "pboc_joint_punishment")]), store, keys
    )
    assert (report.rows_read, report.stored, report.quarantined_rows) == (1, 1, 0)
    stored = store.watchlist().to_pandas()
    assert "id_number" not in stored.columns and stored["applicant_key"].str.fullmatch(r"[0-9a-f]{32}").all()
    apps = pd.read_csv(APPS, dtype=str, keep_default_na=False)
    application = apps.loc[apps["id_number"].str.upper() == listed, "application_id"].item()
    keyed = store.applications(["application_id", "applicant_key"]).to_pandas().set_index("application_id")
    # a lower-case check character is the same person: both are upper-cased before pseudonymising
    assert stored["applicant_key"].item() == keyed.loc[application, "applicant_key"]
    assert stored["key_id"].item() == keys.key_id


def test_an_empty_expiry_is_five_calendar_years_on_the_shanghai_calendar(store, keys, people, tmp_path):
    rows = [
        (people[0], "2024-02-29T10:00:00+08:00", "", "pboc_joint_punishment"),
        (people[1], "2024-03-05T00:30:00+08:00", "", "pboc_joint_punishment"),  # 4 March in UTC
    ]
    ingest_watchlist(_write(tmp_path / "w.csv", rows), store, keys)
    stored = store.watchlist().to_pandas().sort_values("listed_at")
    local = stored["expires_at"].dt.tz_convert("Asia/Shanghai").dt.strftime("%Y-%m-%dT%H:%M").tolist()
    assert local == ["2029-02-28T10:00", "2029-03-05T00:30"]


def test_re_ingesting_the_same_list_changes_nothing(store, keys, people, tmp_path):
    path = _write(
        tmp_path / "w.csv",
        [
            (people[0], "2024-01-01", "", "pboc_joint_punishment"),
            (people[0], "2024-01-01", "", "pboc_joint_punishment"),  # a repeat within the file
            (people[1], "2024-02-01", "2026-02-01", "bank_internal"),
        ],
    )
    first = ingest_watchlist(path, store, keys)
    assert (first.stored, first.duplicates_in_file) == (2, 1)
    before = _snapshot(store.root)
    again = ingest_file(path, WATCHLIST, store, keys)  # the generic entry point dispatches here
    assert (again.stored, again.already_stored, again.duplicates_in_file) == (0, 2, 1)
    assert _snapshot(store.root) == before


def test_bad_rows_are_quarantined_naming_row_column_and_reason_never_the_value(store, keys, people, tmp_path):
    broken = people[1][:-1] + ("0" if people[1][-1] != "0" else "1")  # wrong check character
    path = _write(
        tmp_path / "w.csv",
        [
            (people[0], "2024-01-01", "", "pboc_joint_punishment"),
            (broken, "2024-01-01", "", "pboc_joint_punishment"),
            (people[2], "not a date", "", "pboc_joint_punishment"),
            (people[3], "2024-05-01", "2024-04-30", "pboc_joint_punishment"),
            (people[4], "2024-05-01", "", ""),
        ],
    )
    report = ingest_watchlist(path, store, keys)
    assert (report.stored, report.quarantined_rows) == (1, 4)
    lines = pd.read_csv(store.quarantine_path, dtype=str, keep_default_na=False)
    named = sorted(zip(lines["row"].astype(int), lines["column"], strict=True))
    assert named == [(2, "id_number"), (3, "listed_at"), (4, "expires_at"), (5, "source")]
    assert EXPIRES_BEFORE_LISTED in set(lines["reason"])
    assert set(lines["source"]) == {"w.csv"} and (lines["application_id"] == "").all()
    assert leaks(store.root, {broken, *people}) == []


def test_the_cli_ingests_a_watchlist_and_writes_no_raw_id(tmp_path, monkeypatch, people):
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", KEY)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    path = _write(
        tmp_path / "watchlist.csv", [(p, "2024-01-01", "", "pboc_joint_punishment") for p in people]
    )
    result = CliRunner().invoke(app, ["ingest", "--watchlist", str(path), "--data", str(tmp_path / "store")])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "watchlist.csv" in result.output
    assert len(EventStore(tmp_path / "store").watchlist()) == len(people)
    secrets = raw_identifiers(path)
    assert secrets == set(people)
    assert leaks(tmp_path / "store", secrets, [result.output]) == []


def _events(rows: list[tuple[str, str, str | None, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["applicant_key", "listed_at", "expires_at", "source"])
    for name in ("listed_at", "expires_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
    return frame


def test_a_listing_applies_from_listed_at_inclusive_to_expires_at_exclusive():
    listed, expires = pd.Timestamp("2024-03-01T08:00:00Z"), pd.Timestamp("2025-03-01T08:00:00Z")
    watchlist = Watchlist(_events([("p", str(listed), str(expires), "pboc_joint_punishment")]))
    at = listed.to_pydatetime()
    ends = expires.to_pydatetime()
    assert watchlist.listing("p", at - US) is None  # a listing that starts after the application
    assert watchlist.listing("p", at) is not None
    assert watchlist.listing("p", ends - US) is not None
    assert watchlist.listing("p", ends) is None  # expired
    assert watchlist.listing("someone else", at) is None
    found = watchlist.listing("p", at)
    assert (found.source, found.listed_at, found.expires_at) == ("pboc_joint_punishment", listed, expires)


def test_the_batch_lookup_agrees_with_the_one_by_one_lookup():
    rng = np.random.default_rng(4)
    start = pd.Timestamp("2024-01-01T00:00:00Z")
    rows = []
    for i in range(40):
        listed = start + pd.Timedelta(days=int(rng.integers(0, 300)))
        expires = listed + pd.Timedelta(days=int(rng.integers(0, 200)))
        rows.append(
            (f"p{i % 15}", str(listed), str(expires), ("pboc_joint_punishment", "bank_internal")[i % 2])
        )
    watchlist = Watchlist(_events(rows))
    keys = pd.Series([f"p{i}" for i in rng.integers(0, 20, 500)])
    listed_at = pd.to_datetime([r[1] for r in rows], utc=True)
    # half the instants exactly on a listing's start or end, where the boundary rule bites
    exact = pd.Series(listed_at[rng.integers(0, len(rows), 250)])
    at = pd.concat([exact, pd.Series(start + pd.to_timedelta(rng.integers(0, 500 * 86_400, 250), unit="s"))])
    at = at.reset_index(drop=True).astype("datetime64[us, UTC]")
    together = watchlist.listings_for(keys, at)
    for key, instant, source, listed in zip(keys, at, together["source"], together["listed_at"], strict=True):
        alone = watchlist.listing(key, instant.to_pydatetime())
        assert (alone is None) == (source is None)
        if alone is not None:
            assert (alone.source, alone.listed_at) == (source, listed)
    assert together["source"].notna().sum() > 50


def test_an_earlier_expiry_ends_a_listing_and_a_later_one_cannot_extend_it():
    rows = [
        ("p", "2024-01-01T00:00:00Z", "2029-01-01T00:00:00Z", "pboc_joint_punishment"),
        ("p", "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "pboc_joint_punishment"),  # the removal
        ("p", "2024-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "pboc_joint_punishment"),  # sent later
        ("q", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "pboc_joint_punishment"),  # withdrawn
    ]
    watchlist = Watchlist(_events(rows))
    assert watchlist.listing("p", pd.Timestamp("2024-05-31T23:59:59Z").to_pydatetime()) is not None
    assert watchlist.listing("p", pd.Timestamp("2024-06-01T00:00:00Z").to_pydatetime()) is None
    assert watchlist.listing("q", pd.Timestamp("2024-01-01T00:00:00Z").to_pydatetime()) is None
    assert len(watchlist) == 1


def test_a_removal_list_ends_a_stored_listing(store, keys, people, tmp_path):
    ingest_watchlist(
        _write(tmp_path / "w.csv", [(people[0], "2024-01-01", "", "pboc_joint_punishment")]), store, keys
    )
    key = keys.token("applicant", people[0])
    june = pd.Timestamp("2024-06-15T00:00:00+08:00").to_pydatetime()
    assert Watchlist.from_store(store).listing(key, june) is not None
    removal = _write(
        tmp_path / "removals.csv", [(people[0], "2024-01-01", "2024-06-01", "pboc_joint_punishment")]
    )
    assert ingest_watchlist(removal, store, keys).stored == 1
    assert Watchlist.from_store(store).listing(key, june) is None


def test_a_stored_watchlist_follows_the_store(store, keys, people, tmp_path):
    followed = StoredWatchlist(store)
    key = keys.token("applicant", people[0])
    at = pd.Timestamp("2024-06-01T00:00:00Z").to_pydatetime()
    assert followed.current().listing(key, at) is None
    ingest_watchlist(
        _write(tmp_path / "w.csv", [(people[0], "2024-01-01", "", "pboc_joint_punishment")]), store, keys
    )
    assert followed.current().listing(key, at) is not None


def test_the_watchlist_reason_names_the_list_and_the_listing_day_in_both_languages():
    spec = load_catalogue()["rules"][WATCHLIST_CODE]
    for language in ("zh", "en"):
        assert set(placeholders(spec[language])) == {"source", "listed_on"}
    # listed at 23:30 UTC on 31 December: 1 January in Beijing
    decision = watchlist_decision("pboc_joint_punishment", pd.Timestamp("2024-12-31T23:30:00Z"))
    assert (decision.rule, decision.code) == ("watchlist", WATCHLIST_CODE)
    assert "2025-01-01" in decision.text_zh and "2025-01-01" in decision.text_en
    assert "联合惩戒名单" in decision.text_zh and "joint-punishment list" in decision.text_en
    other = watchlist_decision("city_police_list", pd.Timestamp("2024-05-01T00:00:00Z"))
    assert "city_police_list" in other.text_zh and "city_police_list" in other.text_en


def test_batch_refusals_keep_the_score_and_replace_band_action_and_reasons():
    scores = pd.DataFrame(
        {
            "application_id": ["A1", "A2"],
            "score": [0.01, 0.9],
            "band": ["low", "critical"],
            "action": ["proceed", "refer_to_anti_fraud_team"],
            "reason_codes": ["", "ESC_VELOCITY"],
            "reasons_zh": ["", "…"],
            "reasons_en": ["", "…"],
            "model_version": "1",
        },
        columns=list(SCORE_COLUMNS),
    )
    listings = pd.DataFrame(
        {
            "source": ["pboc_joint_punishment", None],
            "listed_at": pd.to_datetime(["2024-01-01", None], utc=True),
        }
    )
    out = refuse_listed(scores, listings)
    assert out.loc[0, ["band", "action", "reason_codes"]].tolist() == ["blocked", "refuse", "WATCHLIST"]
    assert "2024-01-01" in out.loc[0, "reasons_en"] and out.loc[0, "score"] == 0.01
    pd.testing.assert_series_equal(out.loc[1], scores.loc[1])


def test_the_documented_example_list_ingests_and_its_removal_ends_a_listing(tmp_path, keys):
    example = Path(__file__).parents[1] / "docs" / "examples" / "watchlist.csv"
    store = EventStore(tmp_path / "store")
    report = ingest_watchlist(example, store, keys)
    assert (report.stored, report.quarantined_rows) == (4, 0)
    watchlist = Watchlist.from_store(store)
    removed = keys.token("applicant", "420102200403095810")
    assert watchlist.listing(removed, pd.Timestamp("2024-03-14T12:00:00+08:00").to_pydatetime()) is not None
    assert watchlist.listing(removed, pd.Timestamp("2024-03-15T00:00:00+08:00").to_pydatetime()) is None
    internal = watchlist.listing(
        keys.token("applicant", "440306196107146928"),
        pd.Timestamp("2024-12-01T00:00:00+08:00").to_pydatetime(),
    )
    assert internal is not None and internal.source == "bank_internal"

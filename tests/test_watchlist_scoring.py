"""A listed applicant is refused by rule at every entry point: the scorer, ``POST /v1/score`` and
``/v1/score/batch``, batch scoring and ``duanka score``; an expired, withdrawn or future listing is not.
The list also feeds the listing features, and the service's online state gets every listing the
rule sees (at start, from ``POST /v1/watchlist`` and from ``duanka ingest --watchlist`` while serving).

Each test works on a copy of the session's store with a watchlist added, so the session's own
store (which other modules score without one) is left as it is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.contract import WATCHLIST
from duanka.data.events import APPLICATION_EVENTS
from duanka.data.ingest import ingest_file
from duanka.data.store import EventStore
from duanka.data.watchlist import StoredWatchlist
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_NAMES
from duanka.serving.api import create_app
from duanka.serving.audit import DECISION_COLUMNS, DecisionLog
from duanka.serving.batch import score_file, score_period
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.scorer import Scorer
from duanka.serving.state import sync_online_state
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY
from tests.privacy import leaks

SOURCE = "pboc_joint_punishment"
# holdout case -> (listed_at, expires_at) relative to the application's applied_at, and whether it is refused
CASES = {
    "listed a month before": (pd.Timedelta(days=-30), None, True),
    "listed at the very instant": (pd.Timedelta(0), None, True),
    "expired (5-year default)": (pd.Timedelta(days=-6 * 366), None, False),
    "listed a second after": (pd.Timedelta(seconds=1), None, False),
    "expiring at the very instant": (pd.Timedelta(days=-400), pd.Timedelta(0), False),
    "removed before": (pd.Timedelta(days=-30), pd.Timedelta(days=-10), False),
}
PERIOD = (pd.Timestamp("2025-01-01", tz="Asia/Shanghai"), pd.Timestamp("2025-02-01", tz="Asia/Shanghai"))


@dataclass(frozen=True)
class Listed:
    """A store with a watchlist, and what each chosen application should get."""

    store: EventStore
    rows: dict[str, dict]  # case -> holdout row
    period_id: str  # a stored application of PERIOD whose applicant is listed
    watchlist_csv: Path

    def refused(self, case: str) -> bool:
        return CASES[case][2]


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.tz_convert("Asia/Shanghai").isoformat()


@pytest.fixture(scope="module")
def listed(served_bank, tmp_path_factory) -> Listed:
    root = tmp_path_factory.mktemp("listed")
    store = served_bank.copy_store(root / "store")
    holdout = served_bank.holdout
    counts = pd.Series([r["id_number"].upper() for r in holdout]).value_counts()
    alone = [r for r in holdout if counts[r["id_number"].upper()] == 1]
    rows = dict(zip(CASES, alone, strict=False))
    lines = []
    removals = []
    for case, row in rows.items():
        start, stop, _ = CASES[case]
        at = _at(row["applied_at"])
        listed_at = at + start
        if case == "removed before":
            lines.append((row["id_number"], _iso(listed_at), "", SOURCE))
            removals.append((row["id_number"], _iso(listed_at), _iso(at + stop), SOURCE))
        else:
            lines.append((row["id_number"], _iso(listed_at), "" if stop is None else _iso(at + stop), SOURCE))
    history = pd.read_csv(served_bank.root / "history.csv", dtype=str, keep_default_na=False)
    applied = pd.to_datetime(history["applied_at"], format="ISO8601", utc=True)
    in_period = history.loc[(applied >= PERIOD[0]) & (applied < PERIOD[1])]
    people = in_period["id_number"].str.upper()
    once = in_period.loc[people.map(people.value_counts()) == 1].iloc[len(in_period) // 3]
    lines.append(
        (once["id_number"], _iso(_at(once["applied_at"]) - pd.Timedelta(days=3)), "", "bank_internal")
    )
    watchlist_csv = root / "watchlist.csv"
    pd.DataFrame(lines, columns=list(WATCHLIST.names)).to_csv(watchlist_csv, index=False)
    removals_csv = root / "removals.csv"
    pd.DataFrame(removals, columns=list(WATCHLIST.names)).to_csv(removals_csv, index=False)
    assert ingest_file(watchlist_csv, WATCHLIST, store, served_bank.keys).stored == len(lines)
    assert ingest_file(removals_csv, WATCHLIST, store, served_bank.keys).stored == 1
    return Listed(store, rows, once["application_id"], watchlist_csv)


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def _check_refusal(answer: dict, row: dict) -> None:
    assert answer["band"] == "blocked" and answer["action"] == "refuse"
    assert answer["rule"] == "watchlist"
    assert [r["code"] for r in answer["reasons"]] == ["WATCHLIST"]
    reason = answer["reasons"][0]
    assert "联合惩戒名单" in reason["text_zh"] and "joint-punishment list" in reason["text_en"]
    assert "拒绝" in answer["action_zh"] and "Refuse" in answer["action_en"]
    # the model still scored it, for monitoring
    assert 0 < answer["score"] < 1 and answer["model_band"] in ("critical", "high", "medium", "low")
    assert all(row["id_number"] not in str(value) for value in answer.values())


def _check_model_decision(answer: dict) -> None:
    assert answer["band"] in ("critical", "high", "medium", "low")
    assert answer["rule"] is None and answer["model_band"] == answer["band"]
    assert "WATCHLIST" not in {r["code"] for r in answer["reasons"]}


def test_the_scorer_refuses_listed_applicants_and_audits_the_rule(listed, served_bank, model, tmp_path):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        scorer = Scorer(
            model,
            online,
            log,
            served_bank.keys,
            StoredWatchlist(listed.store),
            clock=replay_clock,
            tolerance=REPLAY_TOLERANCE,
        )
        answers = {case: scorer.score_application(row) for case, row in listed.rows.items()}
    for case, answer in answers.items():
        if listed.refused(case):
            _check_refusal(answer, listed.rows[case])
            listing_day = (_at(listed.rows[case]["applied_at"]) + CASES[case][0]).tz_convert("Asia/Shanghai")
            assert listing_day.strftime("%Y-%m-%d") in answer["reasons"][0]["text_en"]
        else:
            _check_model_decision(answer)
    with sqlite3.connect(paths.decisions) as con:
        audited = dict(con.execute("SELECT application_id, rule FROM decisions").fetchall())
    expected = {
        row["application_id"]: "watchlist" if listed.refused(c) else "" for c, row in listed.rows.items()
    }
    assert audited == expected


def test_a_refused_application_keeps_the_score_batch_scoring_gives_it(served_bank, model, tmp_path):
    first = served_bank.holdout[0]
    paths = served_bank.fresh_paths(tmp_path / "serving")
    store = served_bank.copy_store(tmp_path / "store")
    path = tmp_path / "w.csv"
    listed_at = _iso(_at(first["applied_at"]) - pd.Timedelta(days=1))
    pd.DataFrame([(first["id_number"], listed_at, "", SOURCE)], columns=list(WATCHLIST.names)).to_csv(
        path, index=False
    )
    ingest_file(path, WATCHLIST, store, served_bank.keys)
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        answer = Scorer(
            model,
            online,
            log,
            served_bank.keys,
            StoredWatchlist(store),
            clock=replay_clock,
            tolerance=REPLAY_TOLERANCE,
        ).score_application(first)
    batch = score_file(served_bank.holdout_csv, store, served_bank.keys, model).scores.set_index(
        "application_id"
    )
    assert answer["band"] == batch.loc[first["application_id"], "band"] == "blocked"
    assert answer["score"] == batch.loc[first["application_id"], "score"]


@pytest.fixture(scope="module")
def service(listed, served_bank, tmp_path_factory):
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("watchlist-api") / "serving")
    keyfile = KeyFile(paths.keys)
    tokens = {"admin": keyfile.create(admin=True)[1], "all": keyfile.create()[1]}
    config = served_bank.service_config(
        ModelSource(served_bank.uri, served_bank.client()), paths, listed.store
    )
    with TestClient(create_app(config)) as client:
        yield client, tokens, paths


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_post_v1_score_refuses_listed_applicants(service, listed):
    client, tokens, _ = service
    for case, row in listed.rows.items():
        response = client.post("/v1/score", json=row, headers=_auth(tokens["all"]))
        assert response.status_code == 200, response.text
        if listed.refused(case):
            _check_refusal(response.json(), row)
        else:
            _check_model_decision(response.json())
    again = client.post("/v1/score", json=listed.rows["listed a month before"], headers=_auth(tokens["all"]))
    assert again.json()["replayed"] is True and again.json()["band"] == "blocked"
    assert 'duanka_decisions_total{band="blocked"} 2.0' in client.get("/metrics").text


def test_post_v1_score_batch_refuses_listed_applicants(service, listed):
    client, tokens, _ = service
    # the same people at the same moments, under new application ids
    rows = [{**row, "application_id": row["application_id"] + "-B"} for row in listed.rows.values()]
    response = client.post("/v1/score/batch", json={"applications": rows}, headers=_auth(tokens["all"]))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for (case, row), answer in zip(listed.rows.items(), results, strict=True):
        if listed.refused(case):
            _check_refusal(answer, row)
        else:
            _check_model_decision(answer)


def test_the_watchlist_feed_is_admin_only_validated_idempotent_and_applies_at_once(
    service, listed, served_bank
):
    client, tokens, paths = service
    row = served_bank.holdout[-1]
    listing = {
        "id_number": row["id_number"],
        "listed_at": _iso(_at(row["applied_at"]) - pd.Timedelta(days=2)),
        "source": SOURCE,
    }
    body = {"listings": [listing]}
    assert client.post("/v1/watchlist", json=body, headers=_auth(tokens["all"])).status_code == 403
    wrong = {
        "listings": [{**listing, "id_number": row["id_number"][:-1]}, {**listing, "expires_at": "2001-01-01"}]
    }
    refused = client.post("/v1/watchlist", json=wrong, headers=_auth(tokens["admin"]))
    assert refused.status_code == 422
    assert [(e["item"], e["field"]) for e in refused.json()["errors"]] == [
        (0, "id_number"),
        (1, "expires_at"),
    ]
    assert row["id_number"][:-1] not in refused.text
    before = len(listed.store.watchlist())
    fed = client.post("/v1/watchlist", json=body, headers=_auth(tokens["admin"]))
    assert fed.status_code == 200, fed.text
    assert (fed.json()["stored"], fed.json()["already_stored"]) == (1, 0)
    assert len(listed.store.watchlist()) == before + 1
    resent = client.post("/v1/watchlist", json=body, headers=_auth(tokens["admin"])).json()
    assert (resent["stored"], resent["already_stored"]) == (0, 1)
    answer = client.post("/v1/score", json=row, headers=_auth(tokens["all"])).json()
    _check_refusal(answer, row)
    assert leaks(listed.store.root, {row["id_number"]}) == []
    assert leaks(paths.root, {row["id_number"]}) == []
    with sqlite3.connect(paths.decisions) as con:
        kinds = [k for (k,) in con.execute("SELECT kind FROM events WHERE kind = 'watchlist_received'")]
    assert len(kinds) == 2


def test_batch_scoring_refuses_listed_applicants(listed, served_bank, model):
    scores = score_file(served_bank.holdout_csv, listed.store, served_bank.keys, model).scores
    by_id = scores.set_index("application_id")
    for case, row in listed.rows.items():
        band = by_id.loc[row["application_id"], "band"]
        assert (band == "blocked") == listed.refused(case), case
    blocked = scores.loc[scores["band"] == "blocked"]
    assert (blocked["action"] == "refuse").all() and (blocked["reason_codes"] == "WATCHLIST").all()
    assert blocked["reasons_zh"].str.contains("联合惩戒名单").all()
    start, end = (t.tz_convert("UTC") for t in PERIOD)
    period = score_period(listed.store, start, end, model).set_index("application_id")
    assert period.loc[listed.period_id, "band"] == "blocked"
    assert "本行内部禁止开户名单" in period.loc[listed.period_id, "reasons_zh"]
    assert (period["band"] == "blocked").sum() == 1


def test_duanka_score_refuses_listed_applicants(listed, served_bank, duanka_env, tmp_path):
    runner = CliRunner()
    data = str(listed.store.root)
    by_file = runner.invoke(
        app,
        [
            "score",
            "--data",
            data,
            "--applications",
            str(served_bank.holdout_csv),
            "--out",
            str(tmp_path / "f.csv"),
        ],
    )
    assert by_file.exit_code == 0, by_file.output
    assert "blocked" in by_file.output
    written = pd.read_csv(tmp_path / "f.csv", keep_default_na=False).set_index("application_id")
    for case, row in listed.rows.items():
        assert (written.loc[row["application_id"], "action"] == "refuse") == listed.refused(case), case
    by_period = runner.invoke(
        app,
        [
            "score",
            "--data",
            data,
            "--from",
            "2025-01-01",
            "--to",
            "2025-02-01",
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert by_period.exit_code == 0, by_period.output
    period = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("application_id")
    assert period.loc[listed.period_id, "band"] == "blocked"


def test_an_audit_log_from_before_hard_rules_gets_the_rule_column(tmp_path):
    path = tmp_path / "decisions.db"
    old = [c for c in DECISION_COLUMNS if c not in ("rule", "client_request_id")]
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            + ", ".join(f"{c} TEXT" for c in old)
            + ")"
        )
        con.execute(
            f"INSERT INTO decisions ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})", ["x"] * len(old)
        )
    DecisionLog(path, chain_key=CHAIN_KEY).close()
    with sqlite3.connect(path) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(decisions)")]
        assert columns == ["seq", *old, "rule", "client_request_id", "chain"]
        assert con.execute("SELECT rule FROM decisions").fetchall() == [("",)]


def test_every_re_application_of_a_generated_listed_mule_is_refused(served_bank, model, tmp_path):
    """The synthetic bank's own list: its listed mules' later applications, and nothing else, are refused."""
    bank_list = served_bank.root / "bank" / "watchlist.csv"
    store = served_bank.copy_store(tmp_path / "store")
    ingest_file(bank_list, WATCHLIST, store, served_bank.keys)
    history = pd.read_csv(served_bank.root / "history.csv", dtype=str, keep_default_na=False)
    listings = pd.read_csv(bank_list, dtype=str, keep_default_na=False)
    joined = history.merge(listings, on="id_number")
    after = pd.to_datetime(joined["applied_at"], format="ISO8601") >= pd.to_datetime(joined["listed_at"])
    again = set(joined.loc[after, "application_id"])
    assert len(again) >= 3
    start, end = pd.Timestamp("2024-01-01T00:00:00+08:00"), pd.Timestamp("2025-03-01T00:00:00+08:00")
    scores = score_period(store, start.tz_convert("UTC"), end.tz_convert("UTC"), model)
    assert set(scores.loc[scores["band"] == "blocked", "application_id"]) == again


ENDED = ("2020-01-01T00:00:00+08:00", "2023-06-01T00:00:00+08:00")  # over before the bank's first day


def _ended_listing_csv(row: dict, path: Path) -> Path:
    """A listing of ``row``'s applicant that ended long before any application: never refused."""
    frame = pd.DataFrame([(row["id_number"], *ENDED, "bank_internal")], columns=list(WATCHLIST.names))
    frame.to_csv(path, index=False)
    return path


def test_a_synced_state_gives_the_offline_listing_features(served_bank, tmp_path):
    """The bank's own list: the state synced from the store scores the holdout as batch builds it."""
    store = served_bank.copy_store(tmp_path / "store")
    ingest_file(served_bank.root / "bank" / "watchlist.csv", WATCHLIST, store, served_bank.keys)
    events = prepare_applications(served_bank.holdout, served_bank.keys)
    events.sort(key=lambda e: (e["applied_at"], e["application_id"]))
    every = pa.concat_tables([store.applications(), pa.Table.from_pylist(events, schema=APPLICATION_EVENTS)])
    offline = build_features(every, store.labels(), listings=store.watchlist()).set_index("application_id")
    expected = offline.loc[[e["application_id"] for e in events], list(FEATURE_NAMES)].to_numpy()
    listing_columns = [i for i, name in enumerate(FEATURE_NAMES) if "listed" in name or "listings" in name]
    assert np.nansum(expected[:, listing_columns]) > 0
    paths = served_bank.fresh_paths(tmp_path / "serving")
    with OnlineFeatureStore(paths.online) as online:
        # The copied state holds the applications and labels already: only the listings are new.
        assert sync_online_state(online, store, paths.sync_marker, served_bank.keys.key_id) == 0
        assert online._con.execute("SELECT COUNT(*) FROM listings").fetchone()[0] > 0
        got = np.empty_like(expected)
        for i, event in enumerate(events):
            got[i] = online.features_for(event, FEATURE_NAMES)
            online.add_application(event)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_a_listing_ingested_while_serving_reaches_the_next_application_s_features(
    served_bank, model, tmp_path
):
    row = served_bank.holdout[5]
    store = served_bank.copy_store(tmp_path / "store")
    paths = served_bank.fresh_paths(tmp_path / "serving")
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        scorer = Scorer(
            model,
            online,
            log,
            served_bank.keys,
            StoredWatchlist(store),
            clock=replay_clock,
            tolerance=REPLAY_TOLERANCE,
        )
        ingest_file(_ended_listing_csv(row, tmp_path / "ended.csv"), WATCHLIST, store, served_bank.keys)
        answer = scorer.score_application(row)
    assert answer["features"]["applicant_ended_listings"] == 1
    _check_model_decision(answer)  # ended: a signal, not a refusal


def test_a_listing_posted_to_the_service_reaches_the_next_application_s_features(service, served_bank):
    client, tokens, _ = service
    row = served_bank.holdout[-2]
    listing = {"id_number": row["id_number"], "listed_at": ENDED[0], "expires_at": ENDED[1], "source": SOURCE}
    fed = client.post("/v1/watchlist", json={"listings": [listing]}, headers=_auth(tokens["admin"]))
    assert fed.status_code == 200, fed.text
    answer = client.post("/v1/score", json=row, headers=_auth(tokens["all"])).json()
    assert answer["features"]["applicant_ended_listings"] == 1
    _check_model_decision(answer)

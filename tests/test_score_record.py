"""``duanka score --record``: a stored period's batch decisions appended to the store's decision
record, as the service records its own, once each, never beside a running service."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.cli.quickstart import QuickstartPrinter
from duanka.data.config import Settings, get_settings
from duanka.data.contract import WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import BATCH_KEY_ID, DecisionLog, DecisionRow
from duanka.serving.batch import score_period, write_scores
from duanka.serving.batch_job import Recorded, decide_stored_period, record_decisions
from duanka.serving.chain import chain_key, verify
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.quickstart import DemoPlan, DemoScores
from duanka.serving.scorer import Scorer
from tests.conftest import AUDIT_SECRET, REPLAY_TOLERANCE, SECRET, ServedBank, replay_clock

PERIOD = ("2025-01-01", "2025-02-01")  # Asia/Shanghai days, as the command reads them
STARTS, ENDS = (pd.Timestamp(day, tz="Asia/Shanghai") for day in PERIOD)


@dataclass(frozen=True)
class RecordedRun:
    """A copy of the session's store, one of its period's applicants listed, scored with --record."""

    store: EventStore
    out: Path
    output: str
    listed_id: str  # the application of the period refused by the hard rule

    @property
    def record(self) -> Path:
        return self.store.root / "serving" / "decisions.db"

    def scores(self) -> pd.DataFrame:
        return pd.read_csv(self.out, keep_default_na=False, dtype={"model_version": str})


def _score(store: EventStore, out: Path, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "score",
            "--data",
            str(store.root),
            "--from",
            PERIOD[0],
            "--to",
            PERIOD[1],
            "--out",
            str(out),
            *extra,
        ],
    )


def _history(served_bank: ServedBank) -> pd.DataFrame:
    history = pd.read_csv(served_bank.root / "history.csv", dtype=str, keep_default_na=False)
    applied = pd.to_datetime(history["applied_at"], format="ISO8601", utc=True)
    return history.loc[(applied >= STARTS) & (applied < ENDS)]


@pytest.fixture(scope="module")
def command_env(served_bank: ServedBank) -> Iterator[None]:
    """What ``duanka`` needs to find the served bank's registry, pseudonym key and audit key."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DUANKA_MODELS_DIR", str(served_bank.settings.models_dir))
        env.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
        env.setenv("DUANKA_AUDIT_CHAIN_KEY", AUDIT_SECRET)
        env.delenv("DUANKA_AUDIT_DB", raising=False)
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()
    served_bank.client()


@pytest.fixture(scope="module")
def run(served_bank: ServedBank, command_env: None, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    root = tmp_path_factory.mktemp("recorded")
    store = served_bank.copy_store(root / "store")
    period = _history(served_bank)
    people = period["id_number"].str.upper()
    once = period.loc[people.map(people.value_counts()) == 1].iloc[len(period) // 2]
    listed_at = pd.Timestamp(once["applied_at"]) - pd.Timedelta(days=3)
    listing = pd.DataFrame(
        [(once["id_number"], listed_at.isoformat(), "", "bank_internal")], columns=WATCHLIST.names
    )
    listing.to_csv(root / "watchlist.csv", index=False)
    assert ingest_file(root / "watchlist.csv", WATCHLIST, store, served_bank.keys).stored == 1
    out = root / "scores.csv"
    result = _score(store, out, "--record")
    assert result.exit_code == 0, result.output
    return RecordedRun(store, out, result.output, once["application_id"])


def _rows(path: Path, sql: str) -> pd.DataFrame:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
        return pd.read_sql_query(sql, con)


def _decisions(run: RecordedRun) -> pd.DataFrame:
    return _rows(run.record, "SELECT * FROM decisions ORDER BY seq")


def _responses(run: RecordedRun) -> pd.DataFrame:
    return _rows(
        run.record, "SELECT application_id, row_digest, response, event FROM responses ORDER BY rowid"
    )


def _stored(run: RecordedRun) -> pd.DataFrame:
    columns = ["application_id", "branch_id", "applied_at", "row_digest"]
    return run.store.applications(columns).to_pandas().set_index("application_id")


@pytest.fixture(scope="module")
def model(served_bank: ServedBank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def test_every_batch_decision_lands_in_the_record_with_its_branch_time_model_band_and_reasons(run, model):
    scores = run.scores().set_index("application_id")
    decided = _decisions(run).set_index("application_id")
    assert len(decided) == len(scores) > 1000 and set(decided.index) == set(scores.index)
    stored = _stored(run).loc[decided.index]
    assert (decided["branch_id"] == stored["branch_id"]).all()
    applied = stored["applied_at"].map(lambda at: at.isoformat(timespec="microseconds"))
    assert (decided["applied_at"] == applied).all() and decided["applied_at"].str.endswith("+00:00").all()
    assert (decided[["model_name", "model_version"]] == [model.name, model.version]).all().all()
    assert (decided["booster_sha256"] == model.booster_sha256).all()
    assert (decided["bundle_sha256"] == model.registered.bundle_sha256).all()
    assert (decided["score"] == scores.loc[decided.index, "score"]).all()
    assert (decided["band"] == scores.loc[decided.index, "band"]).all()
    assert (decided["reason_codes"] == scores.loc[decided.index, "reason_codes"]).all()
    # one run, made by the operator, not a caller's key; nobody waited, nothing replayed
    assert decided["request_id"].nunique() == 1 and decided["request_id"].iloc[0].startswith("batch-")
    assert (decided["key_id"] == BATCH_KEY_ID).all()
    assert (decided["latency_ms"] == 0.0).all() and (decided["replayed"] == 0).all()
    assert decided["client_request_id"].isna().all()
    assert decided.loc[run.listed_id, ["band", "rule", "reason_codes"]].tolist() == [
        "blocked",
        "watchlist",
        "WATCHLIST",
    ]
    assert (decided.drop(index=run.listed_id)["rule"] == "").all()
    assert {"low", "medium", "high"} <= set(decided["band"])
    at = pd.to_datetime(decided["decided_at"], format="ISO8601")
    assert (at.dt.tz is not None) and (at <= pd.Timestamp.now(tz="UTC")).all()
    assert f"recorded {len(scores):,} decisions" in " ".join(run.output.split())


def test_the_stored_response_of_a_recorded_application_matches_the_scores_file(run, model):
    scores = run.scores().set_index("application_id")
    responses = _responses(run).set_index("application_id")
    assert set(responses.index) == set(scores.index)
    # the digest of the stored contract row: the one the service computes for that row
    assert (responses["row_digest"] == _stored(run).loc[responses.index, "row_digest"]).all()
    # nothing for the online state to redo: the application is the event store's
    assert responses["event"].isna().all()
    for application_id, text in responses["response"].items():
        answer, row = json.loads(text), scores.loc[application_id]
        assert answer["application_id"] == application_id
        assert (answer["score"], answer["band"], answer["action"]) == (
            row["score"],
            row["band"],
            row["action"],
        )
        assert answer["model"] == model.describe()
        assert list(answer["features"]) == list(MODEL_FEATURES)
        reasons = answer["reasons"]
        assert "|".join(r["code"] for r in reasons) == row["reason_codes"]
        assert " | ".join(r["text_zh"] for r in reasons) == row["reasons_zh"]
        assert " | ".join(r["text_en"] for r in reasons) == row["reasons_en"]
        for reason in reasons:
            assert {"code", "text_zh", "text_en", "feature", "value", "contribution"} <= set(reason)
        if application_id == run.listed_id:
            assert answer["rule"] == "watchlist" and answer["model_band"] != "blocked"
            assert reasons[0]["contribution"] is None
        else:
            assert answer["rule"] is None and answer["model_band"] == answer["band"]
            assert all(isinstance(r["contribution"], float) for r in reasons)


def test_the_service_never_redoes_a_batch_decision_into_its_state(run):
    """The online state follows the event store, where the batch's applications are already."""
    key = chain_key(Settings(audit_chain_key=AUDIT_SECRET), Pseudonymiser.from_secret(SECRET))
    with DecisionLog(run.record, chain_key=key) as log:
        assert log.unsynced_events() == []


def test_record_leaves_the_scores_file_as_it_is_without_it(run, model, tmp_path):
    scored = score_period(run.store, STARTS.tz_convert("UTC"), ENDS.tz_convert("UTC"), model)
    assert write_scores(scored, tmp_path / "without.csv").read_bytes() == run.out.read_bytes()


def test_the_record_verifies(run):
    result = CliRunner().invoke(app, ["audit", "verify", "--data", str(run.store.root)])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


def test_a_second_run_records_nothing_new(run, tmp_path):
    before = _decisions(run)
    again = _score(run.store, tmp_path / "again.csv", "--record")
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    assert "recorded 0 decisions" in said and f"{len(before):,} were there already" in said
    pd.testing.assert_frame_equal(_decisions(run), before)
    assert (tmp_path / "again.csv").read_bytes() == run.out.read_bytes()
    assert CliRunner().invoke(app, ["audit", "verify", "--data", str(run.store.root)]).exit_code == 0


def test_record_is_refused_while_the_service_holds_the_store(run, tmp_path):
    before = _decisions(run)
    with run.store.hold("serve"):
        result = _score(run.store, tmp_path / "held.csv", "--record")
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "held by" in said and "(duanka serve)" in said and "--record" in said
    assert not (tmp_path / "held.csv").exists()
    pd.testing.assert_frame_equal(_decisions(run), before)


def test_the_service_is_refused_while_a_record_run_holds_the_store(run, tmp_path, monkeypatch):
    """The other way round: ``score --record`` holds the store for its run, as ``serve`` does."""
    from duanka.data.store_lock import StoreHeld

    held: list[str] = []
    real = EventStore.hold

    def hold_then_try_a_service(self: EventStore, verb: str):
        hold = real(self, verb)
        try:
            real(self, "serve")
        except StoreHeld as exc:
            held.append(str(exc))
        return hold

    monkeypatch.setattr(EventStore, "hold", hold_then_try_a_service)
    assert _score(run.store, tmp_path / "again.csv", "--record").exit_code == 0
    assert len(held) == 1 and "(duanka score --record)" in held[0]


def test_a_tampered_record_is_refused_as_the_service_refuses_it(run, tmp_path):
    copy = EventStore(
        Path(shutil.copytree(run.store.root, tmp_path / "store", ignore=shutil.ignore_patterns("*.lock")))
    )
    record = copy.root / "serving" / "decisions.db"
    con = sqlite3.connect(record)
    con.execute("DROP TRIGGER decisions_no_update")
    con.execute("UPDATE decisions SET chain = '' WHERE seq = 3")  # to have it chained again, edited
    con.commit()
    con.close()
    result = _score(copy, tmp_path / "tampered.csv", "--record")
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "holds no chain value though the record is chained" in said and "audit verify" in said


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--applications", "FILE"], "--record records a stored date range (--from/--to) only"),
        (["--from", PERIOD[0], "--to", PERIOD[1], "--engine", "dask"], "--record scores on this machine"),
    ],
)
def test_record_is_refused_where_it_could_not_record_as_the_service_does(
    served_bank, command_env, tmp_path, arguments, said
):
    arguments = [str(served_bank.holdout_csv) if a == "FILE" else a for a in arguments]
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--data",
            str(served_bank.store.root),
            "--out",
            str(tmp_path / "s.csv"),
            "--record",
            *arguments,
        ],
    )
    assert result.exit_code == 1
    assert said in " ".join(result.output.split())


def test_the_service_replays_a_recorded_answer_to_the_same_application(run, served_bank, model, tmp_path):
    """The recorded response is stored under the digest the service computes for the application's
    contract row: sent again, it is the answer, replayed, as for any application answered before."""
    paths = served_bank.fresh_paths(tmp_path / "serving")
    shutil.copy(run.record, paths.decisions)
    recorded = _responses(run).set_index("application_id")["response"].map(json.loads)
    period = _history(served_bank).set_index("application_id")
    medium = next(a for a, r in recorded.items() if r["band"] == "medium")
    sent = [
        {k: v or None for k, v in period.loc[a].items()} | {"application_id": a}
        for a in (medium, run.listed_id)
    ]
    key = chain_key(Settings(audit_chain_key=AUDIT_SECRET), served_bank.keys)
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=key) as log:
        scorer = Scorer(model, online, log, served_bank.keys, clock=replay_clock, tolerance=REPLAY_TOLERANCE)
        answers = scorer.score(prepare_applications(sent, served_bank.keys), key_id="k", request_id="again")
    assert [a.replayed for a in answers] == [True, True]
    assert [a.response for a in answers] == [recorded[medium], recorded[run.listed_id]]
    with sqlite3.connect(paths.decisions) as con:
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE request_id = 'again'").fetchone() == (2,)
        assert verify(con, key).problem is None


def test_batch_decisions_never_cut_the_services_bands(tmp_path):
    """The service's cuts come from its own decisions: a batch run decides a past period at once, and
    counted on the day of the run its scores would stand for openings that were not that day's."""
    now = datetime(2025, 3, 10, 4, tzinfo=UTC)
    with DecisionLog(tmp_path / "decisions.db", chain_key=b"k" * 32) as log:
        for key_id, score in (("0a1b2c", 0.2), (BATCH_KEY_ID, 0.9)):
            log.record(
                [
                    DecisionRow(
                        request_id="r",
                        application_id=f"A-{key_id}",
                        key_id=key_id,
                        decided_at=now.isoformat(timespec="microseconds"),
                        model_name="duanka",
                        model_version="1",
                        booster_sha256="a" * 64,
                        score=score,
                        band="low",
                        reason_codes="",
                        latency_ms=0.0,
                        replayed=False,
                    )
                ]
            )
        assert log.scores_since("a" * 64, datetime(2025, 3, 1, tzinfo=UTC))[1] == [0.2]


def test_an_application_answered_for_other_content_is_counted_and_left_as_it_was(run, model, tmp_path):
    """An id the record answered for other content than the store holds is never overwritten: the
    run counts it among those already there, and says how many differ."""
    decided = decide_stored_period(
        run.store, STARTS.tz_convert("UTC"), ENDS.tz_convert("UTC"), model, progress=False
    )
    first, second = decided.scores["application_id"].iloc[:2]
    with DecisionLog(tmp_path / "decisions.db", chain_key=b"k" * 32) as log:
        log.record([], {first: ("another digest", {"application_id": first}, None)})
        recorded = record_decisions(log, decided, model, chunk=1_000, progress=False)
        assert log.stored(first).response == {"application_id": first}
        assert log.stored(second).response["band"] == decided.scores["band"].iloc[1]
    assert (recorded.recorded, recorded.already, recorded.differing) == (len(decided) - 1, 1, 1)
    assert recorded.request_id.startswith("batch-")


def test_the_demo_says_how_many_decisions_it_recorded_or_why_none(capsys, tmp_path, model):
    plan = DemoPlan(tmp_path, applications=20_000, months=12, seed=7)
    printer = QuickstartPrinter(plan, Settings())
    scores = pd.DataFrame({"application_id": ["A1", "A2"], "band": ["low", "blocked"]})
    record = tmp_path / "store" / "serving" / "decisions.db"
    printer.scored(DemoScores(scores, tmp_path / "scores.csv", model, record, Recorded("batch-1", 2, 0, 0)))
    said = " ".join(capsys.readouterr().out.split())
    assert f"recorded 2 decisions (request batch-1) -> {record}; 0 were there already" in said
    printer.scored(
        DemoScores(scores, tmp_path / "scores.csv", model, record, not_recorded="held by process 7")
    )
    said = " ".join(capsys.readouterr().err.split())
    assert f"decisions not recorded in {record}: held by process 7" in said

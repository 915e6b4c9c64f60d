"""Batch scoring: point in time, the service's numbers, reasons where they are asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.store import EventStore
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog
from duanka.serving.batch import SCORE_COLUMNS, score_features, score_file, score_period, write_scores
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.scorer import Scorer
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY

PERIOD = (pd.Timestamp("2025-01-01", tz="Asia/Shanghai"), pd.Timestamp("2025-02-01", tz="Asia/Shanghai"))


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


@pytest.fixture(scope="module")
def period_scores(served_bank, model) -> pd.DataFrame:
    start, end = (t.tz_convert("UTC") for t in PERIOD)
    return score_period(served_bank.store, start, end, model)


def test_scores_have_the_contract_columns_and_reasons_for_medium_or_higher(period_scores, model):
    assert tuple(period_scores.columns) == SCORE_COLUMNS
    assert len(period_scores) > 1_000
    flagged = period_scores["band"] != "low"
    assert flagged.any() and (~flagged).any()
    assert (period_scores.loc[~flagged, ["reason_codes", "reasons_zh", "reasons_en"]] == "").all().all()
    explained = period_scores.loc[flagged]
    assert (explained["reason_codes"] != "").all()
    assert (explained["reason_codes"].str.count(r"\|") == explained["reasons_en"].str.count(r" \| ")).all()
    assert set(period_scores["model_version"]) == {model.version}
    actions = {"critical": "refer_to_anti_fraud_team", "high": "enhanced_due_diligence"}
    actions |= {"medium": "additional_checks", "low": "proceed"}
    assert (period_scores["action"] == period_scores["band"].map(actions)).all()


def test_reading_only_the_history_a_window_reaches_changes_no_score(served_bank, model):
    """February 2025 reads applications from February 2024 on; the full build agrees."""
    start = pd.Timestamp("2025-02-01", tz="Asia/Shanghai").tz_convert("UTC")
    end = pd.Timestamp("2025-03-01", tz="Asia/Shanghai").tz_convert("UTC")
    assert served_bank.store.applications()["applied_at"].to_pandas().min() < start - pd.Timedelta(days=365)
    features = build_features(served_bank.store.applications(), served_bank.store.labels())
    chosen = features.loc[(features["applied_at"] >= start) & (features["applied_at"] < end)]
    expected = score_features(chosen, model).reset_index(drop=True)
    pd.testing.assert_frame_equal(score_period(served_bank.store, start, end, model), expected)


def test_explain_all_gives_reasons_to_low_bands_too(period_scores, served_bank, model):
    features = build_features(served_bank.store.applications(), served_bank.store.labels())
    ids = period_scores.loc[period_scores["band"] == "low", "application_id"].head(50)
    chosen = features.loc[features["application_id"].isin(ids)]
    explained = score_features(chosen, model, explain_all=True)
    assert (explained["reason_codes"] != "").mean() > 0.5


def test_a_period_is_scored_as_it_was_whatever_came_later(period_scores, served_bank, model, tmp_path):
    """A store cut at the period's end (no later applications or confirmations) scores it the same."""
    start, end = (t.tz_convert("UTC") for t in PERIOD)
    cut = pa.scalar(end.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    store = served_bank.store
    early = EventStore(tmp_path / "cut")
    apps = store.applications()
    labels = store.labels()
    early.append(
        "applications", apps.filter(pc.less(apps["applied_at"], cut)), key_id=served_bank.keys.key_id
    )
    early.append(
        "labels", labels.filter(pc.less(labels["confirmed_at"], cut)), key_id=served_bank.keys.key_id
    )
    assert store.labels().num_rows > early.labels().num_rows  # some confirmations came later
    again = score_period(early, start, end, model)
    pd.testing.assert_frame_equal(again, period_scores)


def test_the_service_and_batch_give_the_same_application_the_same_decision(served_bank, model, tmp_path):
    """Score, band, action and every reason, to the last bit and letter: one scoring path."""
    paths = served_bank.fresh_paths(tmp_path / "serving")
    rows = served_bank.holdout[:120]
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        scorer = Scorer(model, online, log, served_bank.keys, clock=replay_clock, tolerance=REPLAY_TOLERANCE)
        events = prepare_applications(rows, served_bank.keys)
        served = {
            a.response["application_id"]: a.response for a in scorer.score(events, key_id="t", request_id="r")
        }
    # the service explains every application: so must batch, to compare every one
    batch = score_file(served_bank.holdout_csv, served_bank.store, served_bank.keys, model, explain_all=True)
    assert batch.rejections.empty
    batch_scores = batch.scores.set_index("application_id").loc[list(served)]
    np.testing.assert_array_equal(batch_scores["score"].to_numpy(), [served[a]["score"] for a in served])
    assert batch_scores["band"].tolist() == [served[a]["band"] for a in served]
    assert batch_scores["action"].tolist() == [served[a]["action"] for a in served]
    assert {"low", "medium"} <= set(batch_scores["band"])
    for column, field, separator in (
        ("reason_codes", "code", "|"),
        ("reasons_zh", "text_zh", " | "),
        ("reasons_en", "text_en", " | "),
    ):
        assert batch_scores[column].tolist() == [
            separator.join(r[field] for r in served[a]["reasons"]) for a in served
        ]
    assert (batch_scores["reason_codes"] != "").mean() > 0.5


def test_scores_are_written_as_csv_parquet_or_a_workbook_only(period_scores, tmp_path):
    head = period_scores.head(20)
    pd.testing.assert_frame_equal(pd.read_parquet(write_scores(head, tmp_path / "s.parquet")), head)
    back = pd.read_csv(write_scores(head, tmp_path / "s.csv"), keep_default_na=False)
    assert back["application_id"].tolist() == head["application_id"].tolist()
    book = pd.read_excel(write_scores(head, tmp_path / "s.xlsx"), sheet_name=None, dtype=str)
    assert (
        list(book) == ["scores"]
        and book["scores"]["application_id"].tolist() == head["application_id"].tolist()
    )
    with pytest.raises(ValueError, match=r"\.csv, \.parquet or \.xlsx"):
        write_scores(head, tmp_path / "s.txt")


def test_duanka_score_writes_a_date_range(served_bank, duanka_env, tmp_path, period_scores):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--data",
            str(served_bank.store.root),
            "--from",
            "2025-01-01",
            "--to",
            "2025-02-01",
            "--model",
            served_bank.uri,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, keep_default_na=False, dtype={"model_version": str})
    assert tuple(written.columns) == SCORE_COLUMNS
    assert written["application_id"].tolist() == period_scores["application_id"].tolist()
    np.testing.assert_allclose(written["score"], period_scores["score"], rtol=1e-15)
    assert "critical" in result.output and str(out) in result.output.replace("\n", "")


def test_duanka_score_scores_a_contract_file_and_lists_rejected_rows(served_bank, duanka_env, tmp_path):
    raw = pd.read_csv(served_bank.holdout_csv, dtype=str, keep_default_na=False).head(30)
    raw.loc[3, "phone"] = "12345"
    source = tmp_path / "apps.csv"
    raw.to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(
        app,
        ["score", "--data", str(served_bank.store.root), "--applications", str(source), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    assert len(written) == 29 and raw.loc[3, "application_id"] not in set(written["application_id"])
    rejected = pd.read_csv(tmp_path / "scores.rejected.csv")
    assert rejected[["row", "column"]].values.tolist() == [[4, "phone"]]
    assert "12345" not in rejected.to_csv()


def _score_file(served_bank, tmp_path, rows: pd.DataFrame, encoding: str = "utf-8") -> list[str]:
    """``duanka score`` of ``rows`` written as ``apps.csv`` in ``encoding``, to ``scores.csv``."""
    source = tmp_path / "apps.csv"
    source.write_bytes(rows.to_csv(index=False).encode(encoding))
    out = tmp_path / "scores.csv"
    return ["score", "--data", str(served_bank.store.root), "--applications", str(source), "--out", str(out)]


def test_duanka_score_fails_a_file_whose_rows_all_break_the_contract(served_bank, duanka_env, tmp_path):
    raw = pd.read_csv(served_bank.holdout_csv, dtype=str, keep_default_na=False).head(5)
    raw["phone"] = "12345"
    arguments = _score_file(served_bank, tmp_path, raw)
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "apps.csv: 100% of its 5 rows break the contract, more than --max-quarantine-share 50%" in said
    assert pd.read_csv(tmp_path / "scores.rejected.csv")["row"].tolist() == [1, 2, 3, 4, 5]
    # a batch job that accepts some rejections says so
    assert CliRunner().invoke(app, [*arguments, "--max-quarantine-share", "1"]).exit_code == 0


@pytest.mark.parametrize("name", ["GBK", "gb2312", "GB18030", "cp936"])
def test_duanka_score_reads_a_chinese_excel_export_with_the_encoding_as_typed(
    served_bank, duanka_env, tmp_path, name
):
    raw = pd.read_csv(served_bank.holdout_csv, dtype=str, keep_default_na=False).head(10)
    arguments = _score_file(served_bank, tmp_path, raw, "gb18030")
    result = CliRunner().invoke(app, [*arguments, "--encoding", name])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 10


def test_duanka_score_needs_a_range_or_a_file(served_bank, duanka_env, tmp_path):
    result = CliRunner().invoke(
        app, ["score", "--data", str(served_bank.store.root), "--out", str(tmp_path / "x.csv")]
    )
    assert result.exit_code != 0 and "--from" in result.output


def test_scores_for_excel_are_a_workbook_with_ids_as_text_and_chinese_intact(tmp_path):
    from openpyxl import load_workbook

    from duanka.serving.batch import write_scores

    scores = pd.DataFrame(
        {
            "application_id": ["202507010000000123", '=HYPERLINK("x")'],
            "score": [0.42, 0.01],
            "reasons_zh": ["同一陪同人近30天陪同5人开户", ""],
        }
    )
    rejections = pd.DataFrame({"row": [3], "application_id": ["A3"], "column": ["phone"], "reason": ["r"]})
    written = write_scores(scores, tmp_path / "scores.csv", excel=True, rejections=rejections)
    assert written == tmp_path / "scores.xlsx" and not (tmp_path / "scores.csv").exists()
    book = load_workbook(written)
    assert book.sheetnames == ["scores", "rejected"]
    sheet = book["scores"]
    # an 18-digit id stays text: Excel would show a number as 2.02507E+17
    assert sheet["A2"].value == "202507010000000123" and sheet["A2"].data_type == "s"
    assert sheet["C2"].value == "同一陪同人近30天陪同5人开户"
    assert sheet["A3"].data_type == "s"  # a value that looks like a formula is not one
    assert sheet["B2"].value == 0.42

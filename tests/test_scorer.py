"""The scorer: fails closed on any model it cannot trust, reads applications exactly as
ingestion does, answers a retry with the same decision, and learns from confirmations."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pytest

from duanka.data.contract import APPLICATIONS
from duanka.data.ingest import ingest_file
from duanka.data.store import EventStore
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog
from duanka.serving.model_source import ModelSource, check_compatible
from duanka.serving.prepare import InvalidInput, canonical_text, prepare_applications, prepare_labels
from duanka.serving.scorer import ConflictingResend, Scorer
from duanka.training.bundle import BOOSTER_FILE, ModelIntegrityError
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY


@pytest.fixture(scope="module")
def source(served_bank) -> ModelSource:
    return ModelSource(served_bank.uri, served_bank.client())


@pytest.fixture(scope="module")
def model(source):
    return source.load()


@pytest.fixture
def scorer(served_bank, model, tmp_path):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    online = OnlineFeatureStore(paths.online)
    log = DecisionLog(paths.decisions, chain_key=CHAIN_KEY)
    yield Scorer(model, online, log, served_bank.keys, clock=replay_clock, tolerance=REPLAY_TOLERANCE)
    online.close()
    log.close()


def _decisions(scorer: Scorer) -> list[tuple]:
    with sqlite3.connect(scorer.log.path) as con:
        return con.execute("SELECT application_id, replayed FROM decisions ORDER BY seq").fetchall()


# --- fail closed ---------------------------------------------------------------------


def test_a_verified_model_of_this_feature_set_loads(model, served_bank):
    assert model.version == served_bank.version
    assert model.registered.bundle.feature_names == list(MODEL_FEATURES)


def test_a_tampered_booster_is_refused(source, monkeypatch, tmp_path):
    real = mlflow.artifacts.download_artifacts

    def tampered(uri: str) -> str:
        copy = Path(shutil.copytree(real(uri), tmp_path / "model"))
        booster = copy / "artifacts" / BOOSTER_FILE
        booster.write_text(booster.read_text(encoding="utf-8").replace("leaf_value=", "leaf_value=0", 1))
        return str(copy)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", tampered)
    with pytest.raises(ModelIntegrityError, match=r"booster\.txt differs from the one recorded"):
        source.load()


def test_a_model_of_another_feature_set_version_is_refused(source, monkeypatch):
    monkeypatch.setattr("duanka.serving.model_source.FEATURE_SET_VERSION", "0123456789abcdef")
    with pytest.raises(ModelIntegrityError, match="feature set"):
        source.load()


def test_a_model_expecting_other_inputs_is_refused(model):
    bundle = model.registered.bundle
    shuffled = dataclasses.replace(bundle, feature_names=list(reversed(bundle.feature_names)))
    with pytest.raises(ModelIntegrityError, match="other inputs"):
        check_compatible(dataclasses.replace(model.registered, bundle=shuffled))


def test_an_unknown_alias_is_refused(served_bank):
    with pytest.raises(ModelIntegrityError, match="cannot resolve"):
        ModelSource("models:/duanka@nobody", served_bank.client()).load()


# --- reading applications exactly as ingestion does ----------------------------------


def test_the_scorers_event_is_ingestions_event_for_the_same_row(served_bank, tmp_path):
    store = EventStore(tmp_path / "store")
    ingest_file(served_bank.holdout_csv, APPLICATIONS, store, served_bank.keys)
    ingested = {e["application_id"]: e for e in store.applications().to_pylist()}
    prepared = prepare_applications(served_bank.holdout[:25], served_bank.keys)
    assert len(prepared) == 25
    for event in prepared:
        assert event == ingested[event["application_id"]]


def test_json_values_are_read_as_a_contract_file_would_hold_them():
    assert [canonical_text(v) for v in (True, False, 12, 12.0, "", " x ", None)] == [
        "true",
        "false",
        "12",
        "12.0",
        None,
        " x ",
        None,
    ]
    with pytest.raises(TypeError):
        canonical_text({"nested": 1})


def test_every_defect_is_named_and_no_personal_value_is_repeated(served_bank):
    row = dict(served_bank.holdout[0])
    row.update(phone="1380013800", id_number=row["id_number"][:-1] + "0", branch_id=None, u_shield="yes")
    with pytest.raises(InvalidInput) as caught:
        prepare_applications([row], served_bank.keys)
    fields = {e.field for e in caught.value.errors}
    assert {"phone", "branch_id", "u_shield"} <= fields
    assert {e.item for e in caught.value.errors} == {0}
    text = " ".join(e.reason for e in caught.value.errors)
    assert "1380013800" not in text and row["id_number"] not in text


def test_a_float_count_is_rejected_as_in_a_parquet_file(served_bank):
    row = {**served_bank.holdout[0], "phone_tenure_days": 12.0}
    with pytest.raises(InvalidInput) as caught:
        prepare_applications([row], served_bank.keys)
    assert [e.field for e in caught.value.errors] == ["phone_tenure_days"]


# --- decisions -----------------------------------------------------------------------


def test_a_decision_carries_score_band_action_reasons_model_and_features(scorer, model, served_bank):
    answer = scorer.score_application(served_bank.holdout[0])
    assert 0.0 < answer["score"] < 1.0
    assert answer["band"] in ("critical", "high", "medium", "low")
    assert answer["action_zh"] and answer["action_en"]
    assert answer["model"] == model.describe()
    assert list(answer["features"]) == list(MODEL_FEATURES)
    assert len(answer["reasons"]) <= 3
    assert all(r["contribution"] > 0 and r["text_zh"] and r["text_en"] for r in answer["reasons"])


def test_a_retry_returns_the_same_answer_and_counts_once(scorer, served_bank):
    row = served_bank.holdout[1]
    first = scorer.score_application(row)
    again = scorer.score_application(dict(row))
    assert again == first
    (event,) = prepare_applications([row], served_bank.keys)
    assert scorer.online.add_application(event) is False  # already in the state, once
    assert _decisions(scorer) == [(row["application_id"], 0), (row["application_id"], 1)]


def test_a_resend_with_other_content_is_refused_and_changes_nothing(scorer, served_bank):
    row = served_bank.holdout[2]
    scorer.score_application(row)
    changed = {
        **row,
        "photo_tampered": "true" if row["photo_tampered"].lower() in ("false", "0") else "false",
    }
    with pytest.raises(ConflictingResend):
        scorer.score_application(changed)
    assert len(_decisions(scorer)) == 1


def test_an_application_never_counts_towards_its_own_features(scorer, served_bank):
    (event,) = prepare_applications([served_bank.holdout[3]], served_bank.keys)
    before = scorer.online.features_for(event)
    answer = scorer.score_application(served_bank.holdout[3])
    after = scorer.online.features_for(event)
    np.testing.assert_array_equal(before, after)
    assert [answer["features"][n] for n in MODEL_FEATURES] == [None if np.isnan(v) else v for v in before]


def test_a_confirmation_fed_to_the_state_changes_later_applications_features(scorer, served_bank):
    first = served_bank.holdout[4]
    scorer.score_application(first)
    later = {
        **first,
        "application_id": first["application_id"] + "-later",
        "id_number": served_bank.holdout[5]["id_number"],
        "applied_at": "2025-06-01T10:00:00+08:00",
    }
    (event,) = prepare_applications([later], served_bank.keys)
    before = dict(zip(MODEL_FEATURES, scorer.online.features_for(event), strict=True))
    labels = prepare_labels(
        [{"application_id": first["application_id"], "confirmed_at": "2025-05-01", "source": "police_notice"}]
    )
    assert scorer.add_labels(labels, key_id="test", request_id="r1") == 1
    after = dict(zip(MODEL_FEATURES, scorer.online.features_for(event), strict=True))
    assert after["address_confirmed_mules_365d"] == before["address_confirmed_mules_365d"] + 1


def test_an_id_the_state_holds_from_the_event_store_is_refused_like_any_other_resend(scorer, served_bank):
    """The state silently kept the old row and the service audited a decision for it."""
    stored = served_bank.store.applications(["application_id"]).to_pylist()[-1]["application_id"]
    claimed = {**served_bank.holdout[6], "application_id": stored}
    with pytest.raises(ConflictingResend) as from_store:
        scorer.score_application(claimed)
    assert _decisions(scorer) == []
    decided = served_bank.holdout[7]
    scorer.score_application(decided)
    elsewhere = {**served_bank.holdout[8], "application_id": decided["application_id"]}
    with pytest.raises(ConflictingResend) as from_record:
        scorer.score_application(elsewhere)
    # one answer whichever it was: nothing says where the id lives
    assert str(from_store.value).replace(stored, "ID") == str(from_record.value).replace(
        decided["application_id"], "ID"
    )
    assert len(_decisions(scorer)) == 1

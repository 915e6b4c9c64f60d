"""The HTTP service: who may score what, what a bad request gets, what is recorded, and
that a model switch is audited and never drops a request."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.contract import PERSONAL_COLUMNS
from duanka.data.pseudonym import Pseudonymiser
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import MAX_WINDOW_DAYS, MODEL_FEATURES
from duanka.serving.api import create_app
from duanka.serving.audit import DECISION_COLUMNS, export
from duanka.serving.keys import KeyFile
from duanka.serving.lifecycle import Service, ServiceConfig
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.schemas import MAX_BATCH
from duanka.serving.scoring_thread import WrongThread
from duanka.training.bundle import BOOSTER_FILE, META_FILE, MODEL_NAME, sha256_text
from tests.conftest import REPLAY_TOLERANCE
from tests.factories import free_port
from tests.privacy import leaks

ALIAS = "api-test"


@pytest.fixture(scope="module")
def registry(served_bank):
    """A module-only alias, so that moving it disturbs no other test module."""
    client = served_bank.client()
    client.set_registered_model_alias(MODEL_NAME, ALIAS, served_bank.version)
    yield client
    client.delete_registered_model_alias(MODEL_NAME, ALIAS)


@pytest.fixture(scope="module")
def service(served_bank, registry, tmp_path_factory):
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("api") / "serving")
    keyfile = KeyFile(paths.keys)
    branch = served_bank.holdout[0]["branch_id"]
    tokens = {
        "admin": keyfile.create(admin=True)[1],
        "all": keyfile.create()[1],
        "branch": keyfile.create((branch,))[1],
        "labels": keyfile.create(labels=True)[1],
        "branch_labels": keyfile.create((branch,), labels=True)[1],
    }
    config = served_bank.service_config(ModelSource(f"models:/{MODEL_NAME}@{ALIAS}", registry), paths)
    with TestClient(create_app(config)) as client:
        yield client, tokens, paths, keyfile


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _row(served_bank, n: int, **changes) -> dict:
    row = {**served_bank.holdout[n], **changes}
    # JSON callers send typed values; the contract's strings work as well (see the batch test)
    row["photo_tampered"] = row["photo_tampered"].lower() in ("true", "1")
    return row


def _decisions(paths) -> list[tuple]:
    with sqlite3.connect(paths.decisions) as con:
        return con.execute(
            "SELECT application_id, key_id, replayed, band FROM decisions ORDER BY seq"
        ).fetchall()


def _events(paths, kind: str) -> list[dict]:
    with sqlite3.connect(paths.decisions) as con:
        rows = con.execute("SELECT detail FROM events WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
    return [json.loads(r[0]) for r in rows]


# --- scoring -------------------------------------------------------------------------


def test_one_application_gets_a_full_decision(service, served_bank):
    client, tokens, paths, _ = service
    response = client.post("/v1/score", json=_row(served_bank, 10), headers=_auth(tokens["all"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["application_id"] == served_bank.holdout[10]["application_id"]
    assert body["band"] in ("critical", "high", "medium", "low") and 0 < body["score"] < 1
    assert body["model"]["version"] == served_bank.version and len(body["model"]["booster_sha256"]) == 64
    assert list(body["features"]) == list(MODEL_FEATURES)
    assert body["replayed"] is False
    assert response.headers["x-request-id"] == body["request_id"]
    # the audit row names the whole bundle (booster, calibrator, band cuts) that decided
    with sqlite3.connect(paths.decisions) as con:
        audited = con.execute(
            "SELECT booster_sha256, bundle_sha256 FROM decisions WHERE request_id = ?", (body["request_id"],)
        ).fetchall()
    assert audited == [(body["model"]["booster_sha256"], body["model"]["bundle_sha256"])]
    assert len(body["model"]["bundle_sha256"]) == 64


def test_a_retry_gets_the_same_answer_and_counts_once(service, served_bank):
    client, tokens, paths, _ = service
    row = _row(served_bank, 11)
    first = client.post("/v1/score", json=row, headers=_auth(tokens["all"])).json()
    retried = client.post("/v1/score", json=row, headers={**_auth(tokens["all"]), "X-Request-ID": "retry-1"})
    again = retried.json()
    # the server's own id; the caller's is echoed and audited beside it
    assert again["replayed"] is True and re.fullmatch("[0-9a-f]{32}", again["request_id"])
    assert retried.headers["x-request-id"] == again["request_id"]
    assert retried.headers["x-client-request-id"] == "retry-1"
    with sqlite3.connect(paths.decisions) as con:
        audited = con.execute(
            "SELECT request_id, client_request_id FROM decisions WHERE application_id = ? ORDER BY seq",
            (row["application_id"],),
        ).fetchall()
    assert audited == [(first["request_id"], None), (again["request_id"], "retry-1")]
    for volatile in ("request_id", "replayed"):
        first.pop(volatile), again.pop(volatile)
    assert again == first
    mine = [d for d in _decisions(paths) if d[0] == row["application_id"]]
    assert [d[2] for d in mine] == [0, 1]
    metrics = client.get("/metrics").text
    assert "duanka_replayed_decisions_total 1.0" in metrics


def test_a_batch_is_scored_in_time_order_and_answers_in_request_order(service, served_bank):
    client, tokens, _, _ = service
    rows = [served_bank.holdout[n] for n in (14, 12, 13)]  # contract strings, as read from a CSV
    response = client.post("/v1/score/batch", json={"applications": rows}, headers=_auth(tokens["all"]))
    assert response.status_code == 200, response.text
    assert [r["application_id"] for r in response.json()["results"]] == [r["application_id"] for r in rows]


def test_the_service_and_the_bundle_agree_on_the_score(service, served_bank):
    client, tokens, _, _ = service
    body = client.post("/v1/score", json=_row(served_bank, 15), headers=_auth(tokens["all"])).json()
    model = ModelSource(served_bank.uri, served_bank.client()).load()
    x = np.array([[np.nan if v is None else v for v in body["features"].values()]])
    assert body["score"] == float(model.registered.bundle.score(x)[0])


# --- who may call --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer dk_nope_nope"}, {"Authorization": "Basic abc"}]
)
def test_no_key_or_a_wrong_one_gets_401_and_records_nothing(service, served_bank, headers):
    client, _, paths, _ = service
    before = _decisions(paths)
    response = client.post("/v1/score", json=_row(served_bank, 20), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert _decisions(paths) == before


def test_a_revoked_key_gets_401(service, served_bank):
    client, _, _, keyfile = service
    record, token = keyfile.create()
    assert client.get("/readyz").status_code == 200
    keyfile.revoke(record.key_id)
    assert client.post("/v1/score", json=_row(served_bank, 21), headers=_auth(token)).status_code == 401


def test_a_branch_key_cannot_score_for_another_branch(service, served_bank):
    client, tokens, paths, _ = service
    own = served_bank.holdout[0]["branch_id"]
    other = next(n for n, r in enumerate(served_bank.holdout) if r["branch_id"] != own)
    before = _decisions(paths)
    refused = client.post("/v1/score", json=_row(served_bank, other), headers=_auth(tokens["branch"]))
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "branch_id"
    assert _decisions(paths) == before
    allowed = client.post("/v1/score", json=_row(served_bank, 0), headers=_auth(tokens["branch"]))
    assert allowed.status_code == 200


def test_only_keys_made_with_labels_confirm_and_only_admin_reloads(service, served_bank):
    client, tokens, _, _ = service
    label = {"application_id": "A1", "confirmed_at": "2025-04-01", "source": "police_notice"}
    for token in ("branch", "all", "admin"):
        answer = client.post("/v1/labels", json={"labels": [label]}, headers=_auth(tokens[token]))
        assert answer.status_code == 403, token
        assert "--labels" in answer.json()["detail"]
    assert client.post("/v1/admin/reload", headers=_auth(tokens["all"])).status_code == 403


def test_a_reviewer_key_calls_no_api_route(service, served_bank):
    """A case reviewer signs in to /review; their key scores, confirms and reloads nothing."""
    client, _, paths, keyfile = service
    _, token = keyfile.create(reviewer=True)
    before = _decisions(paths)
    label = {"application_id": "A1", "confirmed_at": "2025-04-01", "source": "review"}
    for path, body in (
        ("/v1/score", _row(served_bank, 0)),
        ("/v1/labels", {"labels": [label]}),
        ("/v1/admin/reload", None),
    ):
        answer = client.post(path, json=body, headers=_auth(token))
        assert answer.status_code == 403, path
        assert "review link" in answer.json()["detail"]
    assert _decisions(paths) == before


def test_confirmations_name_applications_the_key_may_confirm(service, served_bank):
    """Unknown ids are refused; a branch key confirms its branches' applications, and another
    branch's id gets the same answer as an unknown one (the 422 tells it nothing)."""
    client, tokens, _, _ = service
    mine = served_bank.holdout[0]
    other = next(r for r in served_bank.holdout if r["branch_id"] != mine["branch_id"])
    for row, suffix in ((mine, "-mine"), (other, "-other")):
        scored = client.post(
            "/v1/score",
            json=_row(
                served_bank, served_bank.holdout.index(row), application_id=row["application_id"] + suffix
            ),
            headers=_auth(tokens["all"]),
        )
        assert scored.status_code == 200, scored.text

    def confirm(application_id: str, token: str) -> httpx.Response:
        label = {"application_id": application_id, "confirmed_at": "2025-07-01", "source": "review"}
        return client.post("/v1/labels", json={"labels": [label]}, headers=_auth(tokens[token]))

    unknown = confirm("NEVER-SENT", "labels")
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["application_id"]
    assert confirm(mine["application_id"] + "-mine", "branch_labels").status_code == 200
    elsewhere = confirm(other["application_id"] + "-other", "branch_labels")
    not_held = confirm("NEVER-SENT", "branch_labels")
    assert elsewhere.status_code == not_held.status_code == 422
    assert elsewhere.json()["errors"] == not_held.json()["errors"]
    assert confirm(other["application_id"] + "-other", "labels").status_code == 200


# --- what a bad request gets ---------------------------------------------------------


def test_a_contract_breach_gets_422_naming_every_field_without_personal_values(service, served_bank):
    client, tokens, paths, _ = service
    row = _row(served_bank, 30, phone="1381234567", channel="branch", u_shield=None)
    row["id_number"] = row["id_number"][:-1] + ("0" if row["id_number"][-1] != "0" else "1")
    before = _decisions(paths)
    response = client.post("/v1/score", json=row, headers=_auth(tokens["all"]))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {e["field"] for e in errors} == {"phone", "channel", "u_shield", "id_number"}
    assert "1381234567" not in response.text and row["id_number"] not in response.text
    assert _decisions(paths) == before
    fixed = client.post("/v1/score", json=_row(served_bank, 30), headers=_auth(tokens["all"])).json()
    assert fixed["replayed"] is False  # the rejected attempt left nothing behind


def test_a_value_of_the_wrong_json_type_gets_422_without_echoing_it(service, served_bank):
    client, tokens, _, _ = service
    row = _row(served_bank, 31, phone={"number": "13800138000"}, phone_tenure_days=12.5)
    response = client.post("/v1/score", json=row, headers=_auth(tokens["all"]))
    assert response.status_code == 422
    assert {(e["item"], e["field"]) for e in response.json()["errors"]} == {
        (0, "phone"),
        (0, "phone_tenure_days"),
    }
    assert "13800138000" not in response.text


@pytest.mark.parametrize(
    ("body", "status"),
    [(b'{"application_id": ', 400), (b"[1, 2]", 422), (b"", 422), (b'"text"', 422)],
)
def test_a_malformed_body_gets_4xx_never_500(service, body, status):
    client, tokens, _, _ = service
    response = client.post(
        "/v1/score", content=body, headers={**_auth(tokens["all"]), "Content-Type": "application/json"}
    )
    assert response.status_code == status


def test_a_batch_over_the_limit_is_refused_and_nothing_is_recorded(service, served_bank):
    client, tokens, paths, _ = service
    rows = [
        {**served_bank.holdout[40], "application_id": f"OVER-{i}", "applied_at": "2025-03-02T10:00:00+08:00"}
        for i in range(MAX_BATCH + 1)
    ]
    before = _decisions(paths)
    response = client.post("/v1/score/batch", json={"applications": rows}, headers=_auth(tokens["all"]))
    assert response.status_code == 422
    assert [(e["item"], e["field"]) for e in response.json()["errors"]] == [(None, "applications")]
    assert _decisions(paths) == before


def test_an_oversized_body_gets_413(service):
    client, tokens, _, _ = service
    response = client.post(
        "/v1/score/batch",
        content=b" " * (5 * 1024 * 1024),
        headers={**_auth(tokens["all"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_one_bad_application_rejects_the_whole_batch(service, served_bank):
    client, tokens, paths, _ = service
    rows = [served_bank.holdout[41], {**served_bank.holdout[42], "applied_at": "yesterday"}]
    before = _decisions(paths)
    response = client.post("/v1/score/batch", json={"applications": rows}, headers=_auth(tokens["all"]))
    assert response.status_code == 422
    assert [(e["item"], e["field"]) for e in response.json()["errors"]] == [(1, "applied_at")]
    assert _decisions(paths) == before


def test_a_resend_with_other_content_gets_409(service, served_bank):
    client, tokens, _, _ = service
    assert (
        client.post("/v1/score", json=_row(served_bank, 43), headers=_auth(tokens["all"])).status_code == 200
    )
    changed = _row(served_bank, 43, phone_tenure_days="99999")
    assert client.post("/v1/score", json=changed, headers=_auth(tokens["all"])).status_code == 409


# --- the state learns ----------------------------------------------------------------


def test_a_confirmation_changes_the_features_of_later_applications(service, served_bank):
    client, tokens, _, _ = service
    first = _row(served_bank, 50)
    client.post("/v1/score", json=first, headers=_auth(tokens["all"]))

    def later(suffix: str, at: str) -> dict:
        twin = {**first, "application_id": first["application_id"] + suffix, "applied_at": at}
        twin["id_number"] = served_bank.holdout[51]["id_number"]
        return client.post("/v1/score", json=twin, headers=_auth(tokens["all"])).json()["features"]

    before = later("-b", "2025-05-01T09:00:00+08:00")
    label = {
        "application_id": first["application_id"],
        "confirmed_at": "2025-05-10",
        "source": "investigation",
    }
    fed = client.post("/v1/labels", json={"labels": [label]}, headers=_auth(tokens["labels"]))
    assert fed.status_code == 200 and fed.json()["changed"] == 1
    after = later("-c", "2025-06-01T09:00:00+08:00")
    assert after["address_confirmed_mules_365d"] == before["address_confirmed_mules_365d"] + 1


def test_an_invalid_confirmation_gets_422(service):
    client, tokens, _, _ = service
    label = {"application_id": "A1", "confirmed_at": "soon", "source": "rumour"}
    response = client.post("/v1/labels", json={"labels": [label]}, headers=_auth(tokens["labels"]))
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"confirmed_at", "source"}


# --- audit, operations, model switches -----------------------------------------------


def test_the_audit_log_holds_every_decision_and_no_raw_identifier(service, served_bank, tmp_path):
    client, tokens, paths, _ = service
    client.post("/v1/score", json=_row(served_bank, 60), headers=_auth(tokens["all"]))
    out = tmp_path / "audit.csv"
    rows = export(paths.decisions, out)
    assert rows == len(_decisions(paths)) > 0
    # the rows this module sends (scanning for every holdout value would only cost time)
    secrets = {
        row[c].strip()
        for row in served_bank.holdout[:80]
        for c in PERSONAL_COLUMNS
        if row[c] and len(row[c]) >= 6
    }
    assert leaks(paths.root, secrets) == []
    assert leaks(tmp_path, secrets) == []
    with sqlite3.connect(paths.decisions) as con, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM decisions")


def _samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }


def test_health_readiness_and_metrics(service, served_bank):
    client, tokens, _, _ = service
    before = _samples(client)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    decided = client.post("/v1/score", json=_row(served_bank, 16), headers=_auth(tokens["all"])).json()
    assert client.post("/v1/score", json=_row(served_bank, 17)).status_code == 401
    after = _samples(client)

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("duanka_http_requests_total", route="/healthz", method="GET", status="200") == 1
    assert moved("duanka_http_request_duration_seconds_count", route="/healthz") == 1
    assert moved("duanka_decisions_total", band=decided["band"]) == 1
    assert moved("duanka_errors_total", route="/v1/score", kind="unauthorized") == 1
    model = ready.json()["model"]
    in_use = {labels: v for (name, labels), v in after.items() if name == "duanka_model_info"}
    labels = {"version": model["version"], "booster_sha256": model["booster_sha256"]}
    assert in_use == {frozenset(labels.items()): 1}


def test_made_up_http_methods_do_not_grow_the_metrics(service):
    client, _, _, _ = service
    for i in range(30):
        client.request(f"MADEUP{i}", "/healthz")
    metrics = client.get("/metrics").text
    assert "MADEUP" not in metrics
    assert 'method="other"' in metrics
    # A method the route does not take is the caller's error, not the service's.
    assert 'duanka_errors_total{kind="method_not_allowed",route="/healthz"} 30.0' in metrics
    assert 'kind="internal"' not in metrics


def test_what_the_service_loaded_is_frozen_and_collector_pauses_are_measured(service):
    """The model and libraries are out of the collector's sight; its pauses show in /metrics."""
    client, _, _, _ = service
    assert gc.get_freeze_count() > 50_000
    gc.collect()
    metrics = client.get("/metrics").text
    assert 'duanka_gc_pause_seconds_count{generation="2"}' in metrics


def test_the_openapi_document_has_examples(service):
    client, _, _, _ = service
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/score/batch", "/v1/labels", "/v1/admin/reload"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["ApplicationIn"]["examples"][0]["application_id"]
    assert schemas["ScoreOut"]["examples"][0]["band"]


def test_the_documented_example_is_taken_as_it_is_shown(service):
    # "Try it out" on /docs sends the example: its applied_at is the time now, so it is scored
    client, tokens, _, _ = service
    example = client.get("/openapi.json").json()["components"]["schemas"]["ApplicationIn"]["examples"][0]
    shown = pd.Timestamp(example["applied_at"])
    assert str(shown.tz) == "UTC+08:00"  # the service's clock (the tests' replay clock here), Beijing time
    answered = client.post("/v1/score", json=example, headers=_auth(tokens["all"]))
    assert answered.status_code == 200, answered.text
    batch = client.get("/openapi.json").json()["components"]["schemas"]["BatchIn"]["examples"][0]
    assert pd.Timestamp(batch["applications"][0]["applied_at"]) >= shown


def test_reloading_follows_the_alias_refuses_a_tampered_model_and_is_audited(service, served_bank, registry):
    client, tokens, paths, _ = service
    current = registry.get_model_version(MODEL_NAME, served_bank.version)
    twin = registry.create_model_version(MODEL_NAME, current.source, run_id=current.run_id)
    for key in ("booster_sha256", "bundle_sha256", "feature_set_version"):
        registry.set_model_version_tag(MODEL_NAME, twin.version, key, current.tags[key])
    registry.set_registered_model_alias(MODEL_NAME, ALIAS, twin.version)

    reloaded = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
    assert reloaded.status_code == 200 and reloaded.json()["switched"] is True
    assert reloaded.json()["model"]["version"] == str(twin.version)
    assert _events(paths, "model_switched")[-1]["to_version"] == str(twin.version)

    tampered = registry.create_model_version(MODEL_NAME, current.source, run_id=current.run_id)
    registry.set_model_version_tag(MODEL_NAME, tampered.version, "booster_sha256", "0" * 64)
    registry.set_registered_model_alias(MODEL_NAME, ALIAS, tampered.version)
    refused = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
    assert refused.status_code == 409
    assert _events(paths, "model_reload_refused")[-1]["kept_version"] == str(twin.version)
    assert client.get("/readyz").json()["model"]["version"] == str(twin.version)

    registry.set_registered_model_alias(MODEL_NAME, ALIAS, served_bank.version)
    back = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
    assert back.json()["model"]["version"] == served_bank.version


@pytest.fixture(scope="module")
def other(served_bank, registry):
    return _other_model(served_bank, registry)


def test_a_switch_lands_between_requests_and_is_audited(service, served_bank, registry, other):
    """A new booster behind the alias: requests before and after are all answered."""
    client, tokens, paths, _ = service
    registry.set_registered_model_alias(MODEL_NAME, ALIAS, other.version)
    try:
        answers = [client.post("/v1/score", json=_row(served_bank, 70), headers=_auth(tokens["all"]))]
        switched = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
        answers.append(client.post("/v1/score", json=_row(served_bank, 71), headers=_auth(tokens["all"])))
        assert switched.json() == {"switched": True, "model": client.get("/readyz").json()["model"]}
        assert [a.status_code for a in answers] == [200, 200]
        assert (
            answers[1].json()["model"]["version"]
            == str(other.version)
            != answers[0].json()["model"]["version"]
        )
        event = _events(paths, "model_switched")[-1]
        assert (event["from_version"], event["to_version"], event["trigger"]) == (
            served_bank.version,
            str(other.version),
            "endpoint",
        )
    finally:
        registry.set_registered_model_alias(MODEL_NAME, ALIAS, served_bank.version)
        client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))


def test_requests_in_flight_during_a_reload_are_all_answered(service, served_bank, registry, other):
    """Each is answered by the old model or the new one, and once one was answered by the new
    one, every later one is: the switch lands between two decisions."""
    client, tokens, paths, _ = service
    old = client.get("/readyz").json()["model"]["booster_sha256"]
    registry.set_registered_model_alias(MODEL_NAME, ALIAS, other.version)
    rows = [_row(served_bank, n, application_id=f"INFLIGHT-{n}") for n in range(100, 124)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            pending = [
                pool.submit(client.post, "/v1/score", json=row, headers=_auth(tokens["all"])) for row in rows
            ]
            reloaded = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
            answers = [f.result() for f in pending]
    finally:
        registry.set_registered_model_alias(MODEL_NAME, ALIAS, served_bank.version)
        client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
    assert reloaded.status_code == 200 and reloaded.json()["switched"] is True
    new = reloaded.json()["model"]["booster_sha256"]
    assert new != old
    assert [a.status_code for a in answers] == [200] * len(rows)
    with sqlite3.connect(paths.decisions) as con:
        audited = con.execute(
            "SELECT application_id, booster_sha256 FROM decisions WHERE application_id LIKE 'INFLIGHT-%' "
            "ORDER BY seq"
        ).fetchall()
    answered = [(a.json()["application_id"], a.json()["model"]["booster_sha256"]) for a in answers]
    assert sorted(audited) == sorted(answered)
    in_order = [booster for _, booster in audited]
    switch_at = in_order.index(new) if new in in_order else len(in_order)
    assert in_order == [old] * switch_at + [new] * (len(in_order) - switch_at)


def test_a_polling_service_follows_the_alias_by_itself(served_bank, registry, other, tmp_path, monkeypatch):
    polled = threading.Event()
    reload = Service.reload

    async def reload_and_tell(self: Service, **context) -> tuple:
        answer = await reload(self, **context)
        if context["trigger"] == "poll":
            polled.set()
        return answer

    monkeypatch.setattr(Service, "reload", reload_and_tell)
    paths = served_bank.fresh_paths(tmp_path / "serving")
    source = ModelSource(f"models:/{MODEL_NAME}@{ALIAS}", registry)
    config = ServiceConfig(
        source,
        source.load(),
        served_bank.keys,
        served_bank.store,
        paths,
        poll_seconds=0.1,
        tolerance=REPLAY_TOLERANCE,
    )
    with TestClient(create_app(config)) as client:
        assert not polled.is_set()  # the alias has not moved: nothing to follow
        registry.set_registered_model_alias(MODEL_NAME, ALIAS, other.version)
        try:
            assert polled.wait(timeout=60), "the poller never reloaded"
            assert client.get("/readyz").json()["model"]["version"] == str(other.version)
        finally:
            registry.set_registered_model_alias(MODEL_NAME, ALIAS, served_bank.version)
    assert _events(paths, "model_switched")[-1]["trigger"] == "poll"


def test_the_scorer_is_not_reachable_off_its_thread(service):
    """Its SQLite is used on the scoring thread only: reaching it from elsewhere fails loudly."""
    client, _, _, _ = service
    scoring = client.app.state.service.scoring
    with pytest.raises(WrongThread):
        scoring.scorer  # noqa: B018 -- the test's own thread
    described = client.portal.call(scoring.run, lambda scorer: scorer.model.describe())
    assert described == client.get("/readyz").json()["model"]


def test_a_service_prunes_its_online_state_on_schedule(served_bank, tmp_path, monkeypatch):
    """What no window of an application it still takes can reach goes; every feature stays."""
    paths = served_bank.fresh_paths(tmp_path / "serving")
    tolerance = timedelta(minutes=10)
    with sqlite3.connect(paths.online) as con:
        (newest,) = con.execute("SELECT MAX(ts) FROM apps").fetchone()
        reach = newest - (tolerance + timedelta(days=MAX_WINDOW_DAYS)) // timedelta(microseconds=1)
        (out_of_reach,) = con.execute("SELECT COUNT(*) FROM apps WHERE ts < ?", (reach,)).fetchone()
        (kept,) = con.execute("SELECT COUNT(*) FROM apps WHERE ts >= ?", (reach,)).fetchone()
    assert out_of_reach > 0 and kept > 0
    later = prepare_applications(served_bank.holdout[5:6], served_bank.keys)[0]
    with OnlineFeatureStore(paths.online) as online:
        expected = online.features_for(later)

    pruned = threading.Event()
    prune = OnlineFeatureStore.prune

    def prune_and_tell(self: OnlineFeatureStore, before) -> int:
        removed = prune(self, before)
        pruned.set()
        return removed

    monkeypatch.setattr(OnlineFeatureStore, "prune", prune_and_tell)
    source = ModelSource(served_bank.uri, served_bank.client())
    config = replace(served_bank.service_config(source, paths), tolerance=tolerance, prune_every_s=0.05)
    with TestClient(create_app(config)) as client:
        assert pruned.wait(timeout=60), "the service never pruned its state"
        scoring = client.app.state.service.scoring
        features = client.portal.call(scoring.run, lambda scorer: scorer.online.features_for(later))
    with sqlite3.connect(paths.online) as con:
        assert con.execute("SELECT COUNT(*) FROM apps WHERE ts < ?", (reach,)).fetchone() == (0,)
        assert con.execute("SELECT COUNT(*) FROM apps WHERE ts >= ?", (reach,)).fetchone() == (kept,)
    np.testing.assert_array_equal(features, expected)


def _other_model(served_bank, registry):
    """A registered version with another booster hash: the same trees with a trailing newline.

    A second training run would cost as much as the whole fixture; a retouched copy is enough
    to tell two models apart, and it passes every verification honestly.
    """
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{served_bank.version}"))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(local, Path(tmp) / "model"))
        booster = copy / "artifacts" / BOOSTER_FILE
        text = booster.read_text(encoding="utf-8") + "\n"
        booster.write_text(text, encoding="utf-8")
        meta_path = copy / "artifacts" / META_FILE
        meta = {**json.loads(meta_path.read_text(encoding="utf-8")), "booster_sha256": sha256_text(text)}
        meta_text = json.dumps(meta)
        meta_path.write_text(meta_text, encoding="utf-8")
        with mlflow.start_run(run_name="retouched copy (test_api)") as run:
            mlflow.log_artifacts(str(copy), "model")
    version = registry.create_model_version(
        MODEL_NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    for key, value in (
        ("booster_sha256", meta["booster_sha256"]),
        ("bundle_sha256", sha256_text(meta_text)),
        ("feature_set_version", meta["feature_set_version"]),
    ):
        registry.set_model_version_tag(MODEL_NAME, version.version, key, value)
    return version


# --- the registered pyfunc behind `mlflow models serve` ------------------------------


@pytest.mark.slow
def test_mlflow_models_serve_scores_precomputed_features_like_the_bundle(served_bank):
    served_bank.client()
    model = ModelSource(served_bank.uri, served_bank.client()).load()
    features = build_features(served_bank.store.applications(), served_bank.store.labels()).tail(5)
    X = features.loc[:, list(MODEL_FEATURES)].to_numpy(dtype=float)
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": served_bank.settings.tracking_uri(),
    }
    server = subprocess.Popen(
        [
            str(Path(venv_bin) / "mlflow"),
            "models",
            "serve",
            "-m",
            served_bank.uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):  # 60 s at most, for a process that loads MLflow and the model
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping in 60 s")
        rows = [[None if np.isnan(v) else v for v in x] for x in X]
        body = json.dumps({"dataframe_split": {"columns": list(MODEL_FEATURES), "data": rows}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        predictions = json.loads(urllib.request.urlopen(request, timeout=30).read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    np.testing.assert_allclose(
        [p["score"] for p in predictions], model.registered.bundle.score(X), rtol=0, atol=1e-12
    )
    assert [p["band"] for p in predictions] == model.registered.bundle.bands.assign(
        model.registered.bundle.score(X)
    ).tolist()


def test_duanka_serve_refuses_to_start_without_a_model_it_can_trust(served_bank, duanka_env):
    runner = CliRunner()
    unknown = runner.invoke(
        app, ["serve", "--data", str(served_bank.store.root), "--model", "models:/duanka@nobody"]
    )
    assert unknown.exit_code == 1 and "cannot resolve" in unknown.output
    duanka_env.setattr("duanka.serving.model_source.FEATURE_SET_VERSION", "0123456789abcdef")
    other = runner.invoke(app, ["serve", "--data", str(served_bank.store.root), "--model", served_bank.uri])
    assert other.exit_code == 1 and "feature set" in other.output


def test_duanka_audit_export_writes_the_decisions(service, duanka_env, served_bank, tmp_path):
    _, _, paths, _ = service
    duanka_env.setenv("DUANKA_AUDIT_DB", str(paths.decisions))
    get_settings.cache_clear()
    out = tmp_path / "audit.parquet"
    result = CliRunner().invoke(app, ["audit", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    assert list(written.columns) == ["seq", *DECISION_COLUMNS, "chain", "reasons_zh", "reasons_en"]
    assert len(written) == len(_decisions(paths))
    data = ["--data", str(served_bank.store.root)]
    verified = CliRunner().invoke(app, ["audit", "verify", *data])
    assert verified.exit_code == 0 and "intact" in verified.stdout, verified.output
    # for Excel: a workbook, the Chinese reasons as written and the ids as text
    result = CliRunner().invoke(app, ["audit", "export", "--out", str(tmp_path / "audit.csv"), "--excel"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "audit.xlsx") in " ".join(result.output.split())
    book = pd.read_excel(tmp_path / "audit.xlsx", sheet_name=None, dtype=str, keep_default_na=False)
    assert list(book) == ["decisions"]
    assert book["decisions"]["reasons_zh"].tolist() == written["reasons_zh"].fillna("").tolist()
    assert book["decisions"]["application_id"].tolist() == written["application_id"].tolist()


def test_an_unknown_pseudonym_key_cannot_start_on_this_state(served_bank, tmp_path, registry):
    paths = served_bank.fresh_paths(tmp_path / "serving")
    source = ModelSource(f"models:/{MODEL_NAME}@{ALIAS}", registry)
    config = ServiceConfig(
        tolerance=REPLAY_TOLERANCE,
        source=source,
        model=source.load(),
        keys=Pseudonymiser.from_secret(b"another secret of 32 bytes or more!!"),
        store=served_bank.store,
        paths=paths,
    )
    with pytest.raises(RuntimeError, match="key"), TestClient(create_app(config)):
        pass


def test_the_api_docs_load_without_a_cdn(service):
    """A bank intranet reaches no CDN: Swagger UI's script and style come from the service."""
    client, _, _, _ = service
    page = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    assets = re.findall(r"""(?:src|href)=['"](/[^'"]+[.](?:js|css))['"]""", page)
    assert len(assets) >= 2
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_the_openapi_document_lists_the_errors_each_route_can_give(service):
    client, _, _, _ = service
    paths = client.get("/openapi.json").json()["paths"]
    score = set(paths["/v1/score"]["post"]["responses"])
    assert {"400", "401", "403", "408", "409", "413", "422", "429", "503"} <= score
    for operation in ("/healthz", "/metrics"):
        assert not {"401", "422"} & set(paths[operation]["get"]["responses"]), operation

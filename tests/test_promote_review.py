"""Review before promotion, from the command line as an operator and an offline reviewer use it:
``duanka keys create --model-reviewer``, ``duanka models approve | reject``, ``duanka promote``
(which takes only an approved challenger, short of ``--force``) and ``duanka audit chain``."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.serving.keys import KeyFile
from duanka.serving.state import ServingPaths
from duanka.training.approval import FORCED_BY_TAG, report_sha256, review_of
from duanka.training.bundle import MODEL_NAME
from tests.conftest import AUDIT_SECRET, SECRET

NOTE = "PR-AUC and recall at the bands up; FPR ratios read"


@pytest.fixture(scope="module")
def store(served_bank, tmp_path_factory):
    """A copy of the served bank's store: its decision record and keys are these tests' own."""
    return served_bank.copy_store(tmp_path_factory.mktemp("promote-review") / "store")


@pytest.fixture
def operator(store, model_versions, served_bank, monkeypatch):
    """``duanka`` on the model versions' registry and the store's copy, aliases and tags as built."""
    model_versions.reset()
    monkeypatch.setenv("DUANKA_MODELS_DIR", str(model_versions.settings.models_dir))
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
    monkeypatch.setenv("DUANKA_AUDIT_CHAIN_KEY", AUDIT_SECRET)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DUANKA_API_KEY", raising=False)
    get_settings.cache_clear()

    def duanka(*args: str, key: str | None = None, exit_code: int = 0) -> str:
        env = {"DUANKA_API_KEY": key} if key else {}
        ran = CliRunner().invoke(app, [*args, "--data", str(store.root)], env=env, terminal_width=400)
        assert ran.exit_code == exit_code, ran.output
        return " ".join(ran.output.split())

    yield duanka
    get_settings.cache_clear()
    served_bank.client()


def _model_reviewer(duanka) -> str:
    """A model reviewer's key, as the operator makes it and hands it over."""
    created = duanka("keys", "create", "--model-reviewer")
    assert "(model reviewer)" in created and "review link --key-id" in created
    return created.split()[-1]


def _events(store, kind: str) -> list[tuple[str | None, dict]]:
    """The record's events of ``kind`` (none before the record exists)."""
    path = ServingPaths.for_data(store.root, get_settings()).decisions
    if not path.exists():
        return []
    with sqlite3.connect(path) as con:
        rows = con.execute(
            "SELECT key_id, detail FROM events WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [(k, json.loads(d)) for k, d in rows]


def _champion(model_versions) -> str:
    return str(model_versions.client().get_model_version_by_alias(MODEL_NAME, "champion").version)


def test_an_approved_challenger_is_promoted_and_both_steps_are_chained_in_the_record(
    operator, store, model_versions
):
    sound = model_versions.sound
    key = _model_reviewer(operator)
    approved = operator("models", "approve", sound, "--note", NOTE, key=key)
    client = model_versions.client()
    report = report_sha256(client, client.get_model_version(MODEL_NAME, sound).run_id)
    assert f"approved version {sound} on report {report[:12]}" in approved
    assert "recorded (model_reviewed)" in approved

    promoted = operator("promote")
    assert "promoted: challenger v" + sound in promoted and "approved by key" in promoted
    assert _champion(model_versions) == sound
    key_id = KeyFile(ServingPaths.for_data(store.root, get_settings()).keys).authenticate(key).key_id
    assert _events(store, "model_reviewed")[-1] == (
        key_id,
        {"version": sound, "decision": "approved", "note": NOTE, "report_sha256": report, "via": "cli"},
    )
    (_, promotion) = _events(store, "model_promoted")[-1]
    assert promotion["version"] == sound and promotion["approved_by"] == key_id
    assert promotion["report_sha256"] == report and promotion["forced_by"] is None
    assert "intact" in operator("audit", "verify")


def test_an_unapproved_challenger_is_refused_and_forcing_it_is_recorded(operator, store, model_versions):
    sound, weak = model_versions.sound, model_versions.weak
    refused = operator("promote")
    assert "not promoted" in refused and f"version {sound} has no approval" in refused
    assert _champion(model_versions) == weak

    operator("promote", "--by", "someone", exit_code=2)  # --by names who forces: only with --force
    forced = operator("promote", "--force", "--by", "ops-li")
    assert "promoted" in forced and "forced by ops-li" in forced
    assert _champion(model_versions) == sound
    tags = model_versions.client().get_model_version(MODEL_NAME, sound).tags
    assert tags[FORCED_BY_TAG] == "ops-li"
    (_, promotion) = _events(store, "model_promoted")[-1]
    assert promotion["forced_by"] == "ops-li" and promotion["approved_by"] is None


def test_a_rejection_or_a_report_built_since_the_approval_keeps_the_challenger_out(operator, model_versions):
    sound = model_versions.sound
    key = _model_reviewer(operator)
    operator("models", "reject", sound, "--note", "FPR ratio for corporate openings too high", key=key)
    assert "was rejected by key" in operator("promote")

    operator("models", "approve", sound, "--note", NOTE, key=key)
    model_versions.report(sound)  # `duanka report` again: another report than the one approved
    refused = operator("promote")
    assert "not promoted" in refused and "built again since" in refused
    assert _champion(model_versions) == model_versions.weak


def test_an_approval_names_the_report_read(operator, model_versions):
    key = _model_reviewer(operator)
    said = operator(
        "models",
        "approve",
        model_versions.sound,
        "--note",
        NOTE,
        "--report-sha256",
        "0" * 64,
        key=key,
        exit_code=1,
    )
    assert "not the one reviewed" in said
    assert review_of(model_versions.client(), model_versions.sound) is None


def test_only_a_model_reviewers_key_approves(operator, store, model_versions):
    keyfile = KeyFile(ServingPaths.for_data(store.root, get_settings()).keys)
    _, case_reviewer = keyfile.create(reviewer=True)  # (never printed: taken from the key file's maker)
    _, scoring = keyfile.create()
    sound = model_versions.sound
    before = len(_events(store, "model_reviewed"))
    for token in (case_reviewer, scoring):
        said = operator("models", "approve", sound, "--note", NOTE, key=token, exit_code=1)
        assert "is not a model reviewer's" in said
    assert "no key given" in operator("models", "approve", sound, "--note", NOTE, exit_code=1)
    assert "not an active key" in operator(
        "models", "approve", sound, "--note", NOTE, key="dk_x_y", exit_code=1
    )
    assert review_of(model_versions.client(), sound) is None
    assert len(_events(store, "model_reviewed")) == before


def test_an_approval_while_a_service_holds_the_store_is_tagged_but_not_recorded(
    operator, store, model_versions
):
    key = _model_reviewer(operator)
    before = len(_events(store, "model_reviewed"))
    with store.hold("serve"):
        said = operator("models", "approve", model_versions.sound, "--note", NOTE, key=key)
    assert "not in the decision record" in said and "held by" in said
    assert review_of(model_versions.client(), model_versions.sound).approved
    assert len(_events(store, "model_reviewed")) == before


def test_audit_chain_leads_from_a_decision_to_the_approval_behind_its_model(
    operator, store, model_versions, tmp_path
):
    sound = model_versions.sound
    key = _model_reviewer(operator)
    operator("models", "approve", sound, "--note", NOTE, key=key)
    operator("promote")
    scores = tmp_path / "scores.csv"
    operator("score", "--from", "2025-02-10", "--to", "2025-02-11", "--record", "--out", str(scores))
    application = pd.read_csv(scores, dtype=str)["application_id"].iloc[0]

    chain = operator("audit", "chain", "--application-id", application)
    registered = model_versions.client().get_model_version(MODEL_NAME, sound)
    report = report_sha256(model_versions.client(), registered.run_id)
    assert f"duanka v{sound}, run {registered.run_id}" in chain
    assert f"booster sha256 {registered.tags['booster_sha256']} (as registered)" in chain
    assert f"report sha256 {report} (held now)" in chain
    assert f"approved by key {key.split('_')[1]}" in chain and NOTE in chain
    assert f"on report {report} (the report held now)" in chain
    assert "promotion event" in chain
    assert "no decision on application NOPE" in operator(
        "audit", "chain", "--application-id", "NOPE", exit_code=1
    )


def test_the_demo_approves_through_the_recorded_path_with_a_key_it_revokes(operator, store, model_versions):
    """What ``make demo`` does between training and scoring: the version's report approved by a
    model-reviewer key made for it (then revoked), chained in the record, then promoted by the rule."""
    from duanka.data.pseudonym import Pseudonymiser
    from duanka.serving.quickstart import DEMO_REVIEW_NOTE, approve_demo_version, chain_event
    from duanka.training.approval import PROMOTED
    from duanka.training.jobs import promote_challenger

    sound = model_versions.sound
    settings = get_settings()
    keys = Pseudonymiser.from_settings(settings)
    report = model_versions.root / f"report-{sound}.html"
    approval = approve_demo_version(store, settings, keys, sound, report)
    assert approval.not_recorded is None and approval.review.via == "quickstart"
    assert approval.review.note == DEMO_REVIEW_NOTE and "no person read" in DEMO_REVIEW_NOTE
    reviewer = KeyFile(ServingPaths.for_data(store.root, settings).keys).active_key(approval.review.by)
    assert reviewer is None  # revoked once it approved
    client = model_versions.client()
    assert review_of(client, sound).approved
    assert review_of(client, sound).report_sha256 == report_sha256(
        client, client.get_model_version(MODEL_NAME, sound).run_id
    )
    (by, reviewed) = _events(store, "model_reviewed")[-1]
    assert by == approval.review.by and reviewed["via"] == "quickstart"

    promoted = promote_challenger(store, settings)  # no --force: the rule finds the approval
    assert promoted.promoted and promoted.approval.by == approval.review.by
    assert chain_event(store, settings, keys, PROMOTED, promoted.record_detail(), key_id=None) is None
    (_, promotion) = _events(store, "model_promoted")[-1]
    assert promotion["approved_by"] == approval.review.by and promotion["forced_by"] is None
    assert "intact" in operator("audit", "verify")

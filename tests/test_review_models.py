"""``/models`` over HTTP: model reviewers see the registered versions side by side and approve or
reject them; case reviewers get none of it, and model reviewers open no case.

The browser test (tests/test_review_models_browser.py) walks the page as a person; these check
each rule on its own, through the app in-process.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from duanka.data.config import Settings
from duanka.serving.api import create_app
from duanka.serving.chain import chain_key, verify
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.review.sessions import ReviewSessions
from duanka.training.approval import report_sha256, review_of
from duanka.training.bundle import MODEL_NAME
from tests.conftest import AUDIT_SECRET


@pytest.fixture(scope="module")
def service(served_bank, model_versions, tmp_path_factory):
    """The service on the model versions' registry (champion: the weak version), with a model
    reviewer, a case reviewer and a scoring key."""
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("models") / "serving")
    keyfile = KeyFile(paths.keys)
    keys = {
        "model": keyfile.create(model_reviewer=True)[0],
        "case": keyfile.create(reviewer=True)[0],
    }
    registry = model_versions.reset()
    config = served_bank.service_config(ModelSource(f"models:/{MODEL_NAME}@champion", registry), paths)
    with TestClient(create_app(config)) as client:
        yield client, paths, keyfile, keys
    served_bank.client()


@pytest.fixture
def page(service, model_versions):
    """The service, with the versions' aliases and tags as built."""
    model_versions.reset()
    return service


def _link(paths, keyfile: KeyFile, key_id: str) -> str:
    return ReviewSessions(paths.root / "review.db", keyfile.active_key).issue_link(key_id)


def _sign_in(client: TestClient, paths, keyfile: KeyFile, key_id: str) -> str:
    """Sign a model reviewer in through a fresh link; the CSRF token of the session."""
    client.cookies.clear()
    answer = client.get(f"/models/sign-in?token={_link(paths, keyfile, key_id)}")
    assert answer.status_code == 200 and 'http-equiv="refresh"' in answer.text
    cookie = answer.headers["set-cookie"]
    assert "duanka_models=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/models" in cookie
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/models").text).group(1)


def _events(paths, kind: str) -> list[tuple[str, dict]]:
    with sqlite3.connect(paths.decisions) as con:
        rows = con.execute(
            "SELECT key_id, detail FROM events WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [(k, json.loads(d)) for k, d in rows]


def _current_report(model_versions, version: str) -> str:
    client = model_versions.client()
    return report_sha256(client, client.get_model_version(MODEL_NAME, version).run_id)


def test_the_page_sets_each_version_beside_the_champion(page, model_versions):
    client, paths, keyfile, keys = page
    _sign_in(client, paths, keyfile, keys["model"].key_id)
    shown = client.get("/models")
    assert shown.status_code == 200
    assert "Content-Security-Policy" in shown.headers
    text = shown.text
    weak, sound = model_versions.weak, model_versions.sound
    heads = re.findall(r'<th data-version="(\d+)">v\d+(.*?)</th>', text)
    assert [v for v, _ in heads][:2] == [weak, sound]  # the champion first
    assert "champion" in heads[0][1] and "challenger" in heads[1][1]
    for label in (
        "test pr_auc",
        "recall at band ≥ critical",
        "band threshold high",
        "FPR ratio out of province / local",
        "feature set version",
        "backtest pooled pr_auc",
    ):
        assert f'<th scope="row">{label}</th>' in text, label
    row = re.search(r'<th scope="row">test pr_auc</th>\s*<td>([^<]+)</td><td class="differs"', text)
    assert row is not None, "a one-month fit's PR-AUC differs from the challenger's, and is marked"
    assert re.search(r'<th scope="row">feature set version</th>\s*<td>(\w+)</td><td>\1</td>', text), (
        "the same feature set is not marked"
    )
    assert "0.4120" in text  # the backtest of the same code, beside each version
    for version in (weak, sound):
        assert f'href="/models/versions/{version}/report"' in text
        assert _current_report(model_versions, version)[:12] in text
    assert [d["page"] for _, d in _events(paths, "models_viewed")][-1] == "versions"


def test_a_model_reviewer_approves_and_the_approval_is_chained_and_tagged(page, model_versions, served_bank):
    client, paths, keyfile, keys = page
    csrf = _sign_in(client, paths, keyfile, keys["model"].key_id)
    sound = model_versions.sound
    shown = _current_report(model_versions, sound)
    answer = client.post(
        f"/models/versions/{sound}/review",
        data={
            "csrf": csrf,
            "report_sha256": shown,
            "decision": "approve",
            "note": "recall holds; ratios fine",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert f"approved version {sound}" in client.get(answer.headers["location"]).text

    reviewed = _events(paths, "model_reviewed")
    assert reviewed[-1] == (
        keys["model"].key_id,
        {
            "version": sound,
            "decision": "approved",
            "note": "recall holds; ratios fine",
            "report_sha256": shown,
            "via": "page",
        },
    )
    con = sqlite3.connect(paths.decisions)
    try:
        verdict = verify(con, chain_key(Settings(audit_chain_key=AUDIT_SECRET), served_bank.keys))
    finally:
        con.close()
    assert verdict.problem is None, verdict.problem
    tagged = review_of(model_versions.client(), sound)
    assert tagged.approved and tagged.by == keys["model"].key_id and tagged.report_sha256 == shown


def test_the_report_is_served_as_its_run_holds_it(page, model_versions):
    client, paths, keyfile, keys = page
    _sign_in(client, paths, keyfile, keys["model"].key_id)
    answer = client.get(f"/models/versions/{model_versions.sound}/report")
    assert answer.status_code == 200
    assert hashlib.sha256(answer.content).hexdigest() == _current_report(model_versions, model_versions.sound)
    assert "sandbox" in answer.headers["Content-Security-Policy"]
    assert client.get("/models/versions/999/report").status_code == 404


def test_a_form_without_its_csrf_token_or_on_a_changed_report_is_refused(page, model_versions):
    client, paths, keyfile, keys = page
    csrf = _sign_in(client, paths, keyfile, keys["model"].key_id)
    sound = model_versions.sound
    shown = _current_report(model_versions, sound)
    forged = client.post(
        f"/models/versions/{sound}/review",
        data={"report_sha256": shown, "decision": "approve", "note": "forged"},
    )
    assert forged.status_code == 403 and "CSRF" in forged.text
    stale = client.post(
        f"/models/versions/{sound}/review",
        data={"csrf": csrf, "report_sha256": "0" * 64, "decision": "approve", "note": "read an older one"},
    )
    assert stale.status_code == 409 and "not the one reviewed" in stale.text
    assert review_of(model_versions.client(), sound) is None


def test_a_rebuilt_report_needs_a_new_review(page, model_versions):
    client, paths, keyfile, keys = page
    csrf = _sign_in(client, paths, keyfile, keys["model"].key_id)
    sound = model_versions.sound
    first = _current_report(model_versions, sound)
    client.post(
        f"/models/versions/{sound}/review",
        data={"csrf": csrf, "report_sha256": first, "decision": "approve", "note": "fine"},
    )
    built = client.post(f"/models/versions/{sound}/report", data={"csrf": csrf}, follow_redirects=False)
    assert built.status_code == 303, built.text
    now = _current_report(model_versions, sound)
    assert now != first  # a report says when it was built
    text = client.get("/models").text
    assert re.search(rf'<td data-version="{sound}" class="review review-approved stale">', text)
    assert f"given on report {first[:12]}, not the one it holds now" in text


def test_a_case_reviewer_opens_no_model_page_and_approves_nothing(page, model_versions):
    client, paths, keyfile, keys = page
    client.cookies.clear()
    refused = client.get(f"/models/sign-in?token={_link(paths, keyfile, keys['case'].key_id)}")
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert "reviewer of cases" in refused.text

    # a case reviewer's own session, carried to /models by hand (a browser never sends it there)
    answer = client.get(f"/review/sign-in?token={_link(paths, keyfile, keys['case'].key_id)}")
    case_cookie = answer.cookies["duanka_review"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/review").text).group(1)
    client.cookies.clear()
    client.cookies.set("duanka_models", case_cookie)
    assert client.get("/models").status_code == 403
    sound = model_versions.sound
    post = client.post(
        f"/models/versions/{sound}/review",
        data={
            "csrf": csrf,
            "report_sha256": _current_report(model_versions, sound),
            "decision": "approve",
            "note": "not mine to approve",
        },
    )
    assert post.status_code == 403
    assert review_of(model_versions.client(), sound) is None
    assert all(key != keys["case"].key_id for key, _ in _events(paths, "model_reviewed"))


def test_a_model_reviewer_opens_no_case(page):
    client, paths, keyfile, keys = page
    client.cookies.clear()
    refused = client.get(f"/review/sign-in?token={_link(paths, keyfile, keys['model'].key_id)}")
    assert refused.status_code == 403 and "/models/sign-in" in refused.text
    _sign_in(client, paths, keyfile, keys["model"].key_id)
    model_cookie = client.cookies.get("duanka_models")
    client.cookies.clear()
    client.cookies.set("duanka_review", model_cookie)
    assert client.get("/review").status_code == 403
    assert client.get("/models").status_code == 401  # and nothing signs it in on /models now


def test_model_reviewer_keys_call_no_api_route(page, served_bank):
    client, _, keyfile, _ = page
    _, token = keyfile.create(model_reviewer=True)
    answer = client.post(
        "/v1/score", json=served_bank.holdout[0], headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403 and "model reviewer" in answer.json()["detail"]

"""The case queue over HTTP: who sees which cases, what a form post needs, and what is recorded.

The browser test (tests/test_review_browser.py) walks the same pages as a person; these check
each rule on its own, through the app in-process.
"""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import quote

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from duanka.serving.api import create_app
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.review.desk import ReviewDesk
from duanka.training.bundle import MODEL_NAME
from tests.conftest import replay_clock


@pytest.fixture(scope="module")
def desk(served_bank, tmp_path_factory):
    """A service that scored every held-back application, and reviewer keys for two branches and all."""
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("review") / "serving")
    keyfile = KeyFile(paths.keys)
    _, scoring = keyfile.create()
    registry = served_bank.client()
    registry.set_registered_model_alias(MODEL_NAME, "review-test", served_bank.version)
    # a copy of the store: confirmations are stored as labels, and the session's store stays as it is
    store = served_bank.copy_store(paths.root.parent / "store")
    config = served_bank.service_config(
        ModelSource(f"models:/{MODEL_NAME}@review-test", registry), paths, store
    )
    with TestClient(create_app(config)) as client:
        answer = client.post(
            "/v1/score/batch",
            json={"applications": served_bank.holdout},
            headers={"Authorization": f"Bearer {scoring}"},
        )
        assert answer.status_code == 200, answer.text
        referred = [r for r in answer.json()["results"] if r["band"] in ("critical", "high")]
        branch_of = {r["application_id"]: r["branch_id"] for r in served_bank.holdout}
        branches = sorted({branch_of[r["application_id"]] for r in referred})
        assert len(branches) >= 2, "the held-back month refers cases at two branches at least"
        reviewers = {
            "A": keyfile.create((branches[0],), reviewer=True)[0],
            "B": keyfile.create((branches[1],), reviewer=True)[0],
            "all": keyfile.create(reviewer=True)[0],
        }
        yield client, paths, keyfile, reviewers, referred, branch_of, store


def _sign_in(client: TestClient, paths, keyfile: KeyFile, key_id: str) -> str:
    """Sign ``key_id`` in through a fresh link; the CSRF token of its session."""
    client.cookies.clear()
    link = ReviewDesk(paths.root, paths.decisions, paths.online, keyfile.active_key).sessions.issue_link(
        key_id
    )
    answer = client.get(f"/review/sign-in?token={link}")
    assert answer.status_code == 200 and 'http-equiv="refresh"' in answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
    queue = client.get("/review")
    assert queue.status_code == 200, queue.text
    return re.search(r'name="csrf" value="([^"]+)"', queue.text).group(1)


def _events(paths, kind: str) -> list[tuple[str, dict]]:
    with sqlite3.connect(paths.decisions) as con:
        rows = con.execute(
            "SELECT key_id, detail FROM events WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [(k, json.loads(d)) for k, d in rows]


def _case_of(referred, branch_of, branch: str) -> str:
    return next(r["application_id"] for r in referred if branch_of[r["application_id"]] == branch)


def test_pages_need_a_session_and_a_link_works_once(desk):
    client, paths, keyfile, reviewers, _, _, _ = desk
    client.cookies.clear()
    assert client.get("/review").status_code == 401
    link = ReviewDesk(paths.root, paths.decisions, paths.online, keyfile.active_key).sessions.issue_link(
        reviewers["A"].key_id
    )
    assert client.get(f"/review/sign-in?token={link}").status_code == 200
    client.cookies.clear()
    again = client.get(f"/review/sign-in?token={link}")
    assert again.status_code == 403 and "used or expired" in again.text
    assert "set-cookie" not in again.headers
    assert client.get("/review").status_code == 401


def test_a_reviewer_sees_only_their_branches_cases(desk):
    client, paths, keyfile, reviewers, referred, branch_of, _ = desk
    _sign_in(client, paths, keyfile, reviewers["A"].key_id)
    page = client.get("/review?status=any").text
    (branch,) = reviewers["A"].branches
    for r in referred:
        shown = f'data-application="{r["application_id"]}"' in page
        assert shown == (branch_of[r["application_id"]] == branch), r["application_id"]
    other = _case_of(referred, branch_of, reviewers["B"].branches[0])
    assert client.get(f"/review/cases/{quote(other)}").status_code == 404
    mine = _case_of(referred, branch_of, branch)
    case = client.get(f"/review/cases/{quote(mine)}")
    assert case.status_code == 200 and "<svg" in case.text and mine in case.text
    assert "Content-Security-Policy" in case.headers and case.headers["Referrer-Policy"] == "no-referrer"


def test_every_page_view_is_in_the_decision_record(desk):
    client, paths, keyfile, reviewers, referred, branch_of, _ = desk
    _sign_in(client, paths, keyfile, reviewers["B"].key_id)
    mine = _case_of(referred, branch_of, reviewers["B"].branches[0])
    client.get(f"/review/cases/{quote(mine)}")
    viewed = [d for k, d in _events(paths, "review_viewed") if k == reviewers["B"].key_id]
    assert {"page": "case", "application_id": mine, "shown": True} in viewed
    assert any(d["page"] == "queue" for d in viewed)
    assert any(k == reviewers["B"].key_id for k, _ in _events(paths, "review_signed_in"))


def test_a_form_post_without_the_csrf_token_is_refused(desk):
    client, paths, keyfile, reviewers, referred, branch_of, _ = desk
    csrf = _sign_in(client, paths, keyfile, reviewers["A"].key_id)
    mine = _case_of(referred, branch_of, reviewers["A"].branches[0])
    before = _events(paths, "case_disposed")
    for form in (
        {"verb": "clear", "note": "looked fine"},
        {"verb": "clear", "note": "x", "csrf": csrf[:-1] + "!"},
    ):
        refused = client.post(f"/review/cases/{quote(mine)}/dispose", data=form)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert _events(paths, "case_disposed") == before


def test_a_reviewer_disposes_only_of_their_branches_cases(desk):
    client, paths, keyfile, reviewers, referred, branch_of, _ = desk
    csrf = _sign_in(client, paths, keyfile, reviewers["A"].key_id)
    other = _case_of(referred, branch_of, reviewers["B"].branches[0])
    before = _events(paths, "case_disposed")
    form = {"verb": "confirm", "note": "ring member", "csrf": csrf}
    assert client.post(f"/review/cases/{quote(other)}/dispose", data=form).status_code == 404
    assert _events(paths, "case_disposed") == before


def test_a_confirmation_becomes_a_review_label_and_a_clearance_does_not(desk):
    client, paths, keyfile, reviewers, referred, _, store = desk
    csrf = _sign_in(client, paths, keyfile, reviewers["all"].key_id)
    confirmed, cleared = (r["application_id"] for r in referred[-2:])
    for application_id, verb in ((confirmed, "confirm"), (cleared, "clear")):
        answer = client.post(
            f"/review/cases/{quote(application_id)}/dispose",
            data={"verb": verb, "note": "checked the site photo", "csrf": csrf},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
    with sqlite3.connect(paths.online) as con:
        labels = dict(con.execute("SELECT application_id, source FROM labels").fetchall())
    assert labels.get(confirmed) == "review" and cleared not in labels
    # and in the event store, for training, dated when the reviewer confirmed (the service's clock)
    stored = store.labels().to_pandas().set_index("application_id")
    assert stored.loc[confirmed, "source"] == "review" and cleared not in stored.index
    assert stored.loc[confirmed, "confirmed_at"] == pd.Timestamp(replay_clock())
    disposed = {d["application_id"]: (k, d) for k, d in _events(paths, "case_disposed")}
    assert disposed[confirmed][0] == reviewers["all"].key_id
    assert disposed[confirmed][1]["status"] == "confirmed" and disposed[confirmed][1]["label"] == "fed"
    assert disposed[cleared][1]["status"] == "cleared" and disposed[cleared][1]["label"] is None
    queue = client.get("/review?status=confirmed").text
    assert f'data-application="{confirmed}"' in queue and f'data-application="{cleared}"' not in queue


def test_a_note_holding_an_identifier_is_refused(desk):
    client, paths, keyfile, reviewers, referred, _, _ = desk
    csrf = _sign_in(client, paths, keyfile, reviewers["all"].key_id)
    case = referred[0]["application_id"]
    for note in ("ID 110101199003077777 seen", "phone 138 0013 8000", ""):
        refused = client.post(
            f"/review/cases/{quote(case)}/dispose", data={"verb": "escalate", "note": note, "csrf": csrf}
        )
        assert refused.status_code == 422, note
    assert all(
        d["application_id"] != case or d["status"] != "escalated" for _, d in _events(paths, "case_disposed")
    )


def test_revoking_the_key_ends_its_sessions(desk):
    client, paths, keyfile, _, _, _, _ = desk
    reviewer, _ = keyfile.create(reviewer=True)
    _sign_in(client, paths, keyfile, reviewer.key_id)
    assert client.get("/review").status_code == 200
    keyfile.revoke(reviewer.key_id)
    assert client.get("/review").status_code == 401

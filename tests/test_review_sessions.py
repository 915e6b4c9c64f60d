"""Reviewer sign-in: a link opens one session, once, within its ten minutes, for an active reviewer key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from duanka.serving.keys import KeyFile
from duanka.serving.review.sessions import (
    CASES,
    LINK_MINUTES,
    MODELS,
    SESSION_HOURS,
    LinkRefused,
    ReviewSessions,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def desk(tmp_path):
    keys = KeyFile(tmp_path / "api_keys.json")
    clock = Clock()
    return keys, clock, ReviewSessions(tmp_path / "review.db", keys.active_key, clock)


def test_a_link_opens_one_session_once(desk):
    keys, _, sessions = desk
    reviewer, _ = keys.create(("B1",), reviewer=True)
    link = sessions.issue_link(reviewer.key_id)
    cookie, session = sessions.exchange(link)
    assert session.key == reviewer and sessions.session(cookie) == session
    with pytest.raises(LinkRefused, match="used or expired"):
        sessions.exchange(link)
    files = [sessions.path, sessions.path.with_name("review.db-wal")]
    stored = b"".join(f.read_bytes() for f in files if f.exists()).decode("latin-1")
    assert link not in stored and cookie not in stored and session.csrf in stored


def test_a_link_expires_after_ten_minutes(desk):
    keys, clock, sessions = desk
    reviewer, _ = keys.create(reviewer=True)
    link = sessions.issue_link(reviewer.key_id)
    clock.now += timedelta(minutes=LINK_MINUTES, seconds=1)
    with pytest.raises(LinkRefused):
        sessions.exchange(link)


def test_only_an_active_reviewer_key_gets_a_link(desk):
    keys, _, sessions = desk
    scorer, _ = keys.create()
    with pytest.raises(LinkRefused, match="not an active reviewer key"):
        sessions.issue_link(scorer.key_id)
    with pytest.raises(LinkRefused):
        sessions.issue_link("nosuchkey")


def test_a_session_ends_when_it_expires_signs_out_or_its_key_is_revoked(desk):
    keys, clock, sessions = desk
    reviewer, _ = keys.create(reviewer=True)
    expiring, _ = sessions.exchange(sessions.issue_link(reviewer.key_id))
    signed_out, _ = sessions.exchange(sessions.issue_link(reviewer.key_id))
    sessions.end(signed_out)
    assert sessions.session(signed_out) is None and sessions.session(expiring) is not None
    clock.now += timedelta(hours=SESSION_HOURS, seconds=1)
    assert sessions.session(expiring) is None
    revoked_link = sessions.issue_link(reviewer.key_id)
    live, _ = sessions.exchange(sessions.issue_link(reviewer.key_id))
    keys.revoke(reviewer.key_id)
    with pytest.raises(LinkRefused, match="revoked"):
        sessions.exchange(revoked_link)
    assert sessions.session(live) is None


def test_a_session_csrf_token_must_match_exactly(desk):
    keys, _, sessions = desk
    reviewer, _ = keys.create(reviewer=True)
    _, session = sessions.exchange(sessions.issue_link(reviewer.key_id))
    assert session.csrf_matches(session.csrf)
    assert (
        not session.csrf_matches(None)
        and not session.csrf_matches("")
        and not session.csrf_matches(session.csrf[:-1])
    )


def test_a_link_signs_in_at_its_own_role_s_pages_only(desk):
    keys, _, sessions = desk
    case_reviewer, _ = keys.create(reviewer=True)
    model_reviewer, _ = keys.create(model_reviewer=True)
    link = sessions.issue_link(model_reviewer.key_id)
    with pytest.raises(LinkRefused, match="reviewer of models, not of cases: open it at /models/sign-in"):
        sessions.exchange(link, CASES)
    cookie, session = sessions.exchange(link, MODELS)  # the refusal left the link unused for its own page
    assert session.role == MODELS and sessions.session(cookie).role == MODELS
    with pytest.raises(LinkRefused, match="reviewer of cases, not of models"):
        sessions.exchange(sessions.issue_link(case_reviewer.key_id), MODELS)

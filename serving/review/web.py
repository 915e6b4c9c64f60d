"""What the reviewers' pages share: templates, security headers, the session a page needs, forms.

Two areas of pages sign in the same way (:mod:`duanka.serving.review.sessions`): the case queue
under ``/review`` and the model review under ``/models``. Each has its own cookie, scoped to its
own path, and each page checks that its session's key reviews what the page is about (a case
reviewer who reaches a model page gets 403, not the page).

Nothing is fetched from outside (one style sheet from this package, inline SVG, no script), so the
pages work on a bank intranet, and the Content-Security-Policy says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from duanka.serving.review.dispose import DispositionRefused
from duanka.serving.review.sessions import CASES, HOMES, MODELS, SESSION_HOURS, Session
from duanka.serving.routes.deps import running_service

HEADERS = {
    # no inline script or style, nothing from another origin, never framed, no link token in a Referer
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Area:
    """One role's pages: where they live, what the header calls them, and the session cookie."""

    role: str
    home: str
    name: str
    cookie: str

    @property
    def reviewer(self) -> str:
        """Who signs in here, as the header and the refusals name them."""
        return "审核员 reviewer" if self.role == CASES else "模型审核员 model reviewer"


AREAS = {
    CASES: Area(CASES, HOMES[CASES], "案件队列 case queue", "duanka_review"),
    MODELS: Area(MODELS, HOMES[MODELS], "模型审核 model review", "duanka_models"),
}
# The monitoring is a model reviewer's too: the same session, a cookie of its own for its path
MONITOR = Area(MODELS, "/monitor", "模型监控 model monitoring", "duanka_monitor")


def case_url(application_id: str) -> str:
    return f"/review/cases/{quote(application_id, safe='')}"


@cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("duanka.serving.review", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["case_url"] = case_url
    return env


def page(name: str, status: int = 200, *, area: Area = AREAS[CASES], **context: object) -> HTMLResponse:
    """A template rendered as a page of ``area``, with the security headers."""
    context.setdefault("session", None)
    return HTMLResponse(templates().get_template(name).render(area=area, **context), status, headers=HEADERS)


def message(
    heading: str, text: str, status: int, *, error: bool = True, area: Area = AREAS[CASES]
) -> HTMLResponse:
    """A page that says one thing (a refusal, a sign-out)."""
    return page("message.html.j2", status, area=area, heading=heading, text=text, error=error, refresh=None)


class NotSignedIn(Exception):
    """No live reviewer session for the area's pages: answered with a page saying how to sign in."""

    def __init__(self, area: Area) -> None:
        super().__init__(area.home)
        self.area = area


class WrongRole(Exception):
    """A live session whose key reviews something else than the area's pages (a case reviewer on
    ``/models``): answered 403."""

    def __init__(self, area: Area, session: Session) -> None:
        super().__init__(area.home)
        self.area = area
        self.session = session


def signed_in(area: Area) -> Callable[[Request], Awaitable[Session]]:
    """The dependency of an area's pages: its live session, of a key that reviews what the area shows."""

    async def session_of(request: Request) -> Session:
        svc = running_service(request)
        session = await asyncio.to_thread(svc.review.sessions.session, request.cookies.get(area.cookie))
        if session is None:
            raise NotSignedIn(area)
        if session.role != area.role:
            raise WrongRole(area, session)
        return session

    return session_of


def _not_signed_in(_request: Request, exc: Exception) -> HTMLResponse:
    """The answer to any page without a live session (none, expired, signed out, key revoked)."""
    assert isinstance(exc, NotSignedIn)
    return message(
        "请登录 Sign in",
        "Not signed in, or the session ended (expired, signed out, or the key was revoked). "
        "Ask the operator for a one-time link: duanka review link --key-id KEY_ID",
        401,
        area=exc.area,
    )


def _wrong_role(_request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, WrongRole)
    own = HOMES.get(exc.session.role or "", "/")
    return message(
        "无权访问 Not for your key",
        f"These pages are for reviewers of {exc.area.role}; key {exc.session.key.key_id} reviews "
        f"{exc.session.role}: its pages are under {own}.",
        403,
        area=exc.area,
    )


def _refused(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, DispositionRefused)
    path = request.url.path
    area = next((a for a in (*AREAS.values(), MONITOR) if path.startswith(a.home)), AREAS[CASES])
    return message("未记录 Not recorded", exc.reason, exc.status, area=area)


def install_handlers(app: FastAPI) -> None:
    """Answer a page without a session, of another role, or a refused form, with a page, not JSON."""
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(WrongRole, _wrong_role)
    app.add_exception_handler(DispositionRefused, _refused)


def request_id(request: Request) -> str:
    return request.scope["duanka.request_id"]


async def form(request: Request, session: Session) -> dict[str, str]:
    """The posted form's fields (last value of each); refuses a post without this session's CSRF token."""
    fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    if not session.csrf_matches(fields.get("csrf")):
        raise DispositionRefused(403, "the form carried no valid CSRF token: reload the page and post again")
    return fields


def keep_session(response: Response, request: Request, area: Area, cookie: str) -> None:
    """Set the area's session cookie: HttpOnly, SameSite=Strict, sent to the area's pages only."""
    response.set_cookie(
        area.cookie,
        cookie,
        max_age=SESSION_HOURS * 3600,  # the browser's clock; the server holds the session's own end
        path=area.home,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )

"""``/review``: the case queue, the case page and dispositions, as server-rendered HTML.

Nothing is fetched from outside (one style sheet from this package, the graph inline SVG, no
script), so the pages work on a bank intranet, and the Content-Security-Policy says so. Every
page needs a case reviewer's session (:mod:`duanka.serving.review.sessions`, checked by
:func:`duanka.serving.review.web.signed_in`); every form post its CSRF token; every page view and
action is appended to the decision record.
"""

from __future__ import annotations

import asyncio
from datetime import date
from importlib import resources
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from duanka.serving.lifecycle import Service
from duanka.serving.review.cases import ORDERS, STATUSES, VERBS, Case, QueueFilter, QueuePage
from duanka.serving.review.dispose import DispositionRefused, dispose, views
from duanka.serving.review.sessions import CASES, LinkRefused, Session
from duanka.serving.review.web import (
    AREAS,
    HEADERS,
    case_url,
    form,
    install_handlers,
    keep_session,
    message,
    page,
    request_id,
    signed_in,
    templates,
)
from duanka.serving.routes.deps import RunningService

__all__ = ["case_url", "install_handlers", "render_queue", "router"]

router = APIRouter(prefix="/review", include_in_schema=False)
AREA = AREAS[CASES]
COOKIE = AREA.cookie
Reviewer = Annotated[Session, Depends(signed_in(AREA))]


@router.get("/static/review.css")
async def style_sheet() -> Response:
    css = resources.files("duanka.serving.review").joinpath("static/review.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/sign-in")
async def sign_in(request: Request, svc: RunningService, token: str = "") -> Response:
    """Exchange a one-time link of a case reviewer for a session cookie, then on to the queue."""
    try:
        cookie, session = await asyncio.to_thread(svc.review.sessions.exchange, token, CASES)
    except LinkRefused as exc:
        return message("登录链接无效 Sign-in link refused", str(exc), 403)
    await views(svc, session, request_id(request), "review_signed_in", {})
    # A page that moves on by itself rather than a 303: a SameSite=Strict cookie set while following
    # a link from another site (mail, chat) is not sent on the redirect that link started.
    response = page(
        "message.html.j2",
        heading="已登录 Signed in",
        text="Opening the case queue.",
        error=False,
        refresh=AREA.home,
        session=session,
    )
    keep_session(response, request, AREA, cookie)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Reviewer, svc: RunningService) -> Response:
    await form(request, session)
    await asyncio.to_thread(svc.review.sessions.end, request.cookies[COOKIE])
    await views(svc, session, request_id(request), "review_signed_out", {})
    response = message(
        "已退出 Signed out", "Signed out. A new one-time link signs you in again.", 200, error=False
    )
    response.delete_cookie(COOKIE, path=AREA.home)
    return response


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


@router.get("")
async def queue(
    request: Request,
    session: Reviewer,
    svc: RunningService,
    band: Annotated[str, Query(pattern="^(|critical|high|blocked)$")] = "",
    branch: str = "",
    status: Annotated[str, Query(pattern=f"^({'|'.join((*STATUSES, 'any'))})$")] = "open",
    date_from: Annotated[str, Query(alias="from", pattern=r"^(|\d{4}-\d{2}-\d{2})$")] = "",
    date_to: Annotated[str, Query(alias="to", pattern=r"^(|\d{4}-\d{2}-\d{2})$")] = "",
    order: Annotated[str, Query(pattern=f"^({'|'.join(ORDERS)})$")] = "newest",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The referred cases of the reviewer's branches, ring members together."""
    wanted = QueueFilter(band or None, branch or None, status, _day(date_from), _day(date_to), order, page)
    await _current(svc)
    shown = await asyncio.to_thread(svc.review.cases.queue, session.key.branches, wanted)
    await views(
        svc,
        session,
        request_id(request),
        "review_viewed",
        {"page": "queue", "query": str(request.query_params)},
    )
    current = min(page, shown.pages)

    def at_page(n: int, **change: str) -> str:
        params = {k: v for k, v in request.query_params.items() if k != "page"} | change
        return f"/review?{urlencode({**params, 'page': n})}"

    urls = {
        "previous": at_page(current - 1) if current > 1 else None,
        "next": at_page(current + 1) if current < shown.pages else None,
        "blocked": at_page(1, band="blocked"),
        "referred": at_page(1, band=""),
    }
    return HTMLResponse(render_queue(shown, wanted, session=session, urls=urls), headers=HEADERS)


def render_queue(
    shown: QueuePage, wanted: QueueFilter, *, session: Session | None = None, urls: dict | None = None
) -> str:
    """The queue page's HTML (the route's, and the benchmark's)."""
    return (
        templates()
        .get_template("queue.html.j2")
        .render(
            area=AREA,
            session=session,
            page=shown,
            wanted=wanted,
            statuses=(*STATUSES, "any"),
            urls=urls or {"previous": None, "next": None, "blocked": "", "referred": ""},
            current=min(wanted.page, shown.pages),
        )
    )


async def _current(svc: Service) -> None:
    """Commit the online state before the cases are read again
    (:meth:`~duanka.serving.review.cases.CaseBook.stale`)."""
    if await asyncio.to_thread(svc.review.cases.stale):
        await svc.scoring.run(lambda scorer: scorer.online.sync())


async def _visible_case(svc: Service, session: Session, application_id: str) -> Case | None:
    await _current(svc)
    case = await asyncio.to_thread(svc.review.cases.case, application_id)
    if case is None or (session.key.branches is not None and case.branch_id not in session.key.branches):
        return None  # one answer whether the case is unknown or another branch's
    return case


def _no_case(application_id: str) -> HTMLResponse:
    return message("没有此案件 No such case", f"No referred case {application_id} at your branches.", 404)


@router.get("/cases/{application_id}")
async def case_page(
    request: Request, application_id: str, session: Reviewer, svc: RunningService, done: str = ""
) -> Response:
    """One case: the decision as made, its reasons and values, the ring drawn, the disposition form."""
    case = await _visible_case(svc, session, application_id)
    await views(
        svc,
        session,
        request_id(request),
        "review_viewed",
        {"page": "case", "application_id": application_id, "shown": case is not None},
    )
    if case is None:
        return _no_case(application_id)
    try:
        drawn = await asyncio.to_thread(svc.review.drawing, case, session.key.branches)
    except LookupError:
        # scored within the last second: the scoring thread has not committed it to the state yet
        await svc.scoring.run(lambda scorer: scorer.online.sync())
        drawn = await asyncio.to_thread(svc.review.drawing, case, session.key.branches)
    return page(
        "case.html.j2",
        session=session,
        case=case,
        done=done[:200],
        **drawn,
        dispose_url=f"{case_url(application_id)}/dispose",
    )


@router.post("/cases/{application_id}/dispose")
async def dispose_case(
    request: Request, application_id: str, session: Reviewer, svc: RunningService
) -> Response:
    """Confirm, clear or escalate a case (or its whole ring), with a note; a confirmation becomes a label."""
    fields = await form(request, session)
    case = await _visible_case(svc, session, application_id)
    if case is None:
        return _no_case(application_id)
    verb = fields.get("verb", "")
    if verb not in VERBS:
        raise DispositionRefused(422, f"verb must be one of {', '.join(VERBS)}")
    outcome = await dispose(
        svc,
        session,
        request_id(request),
        case,
        VERBS[verb],
        fields.get("note", ""),
        whole_ring=fields.get("scope") == "group",
    )
    return RedirectResponse(
        f"{case_url(application_id)}?{urlencode({'done': outcome})}", 303, headers=HEADERS
    )

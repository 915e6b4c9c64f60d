"""``/models``: registered model versions side by side, their reports, and model reviewers' decisions.

A model reviewer signs in through the same one-time links as a case reviewer (``duanka review
link``); only a key made with ``--model-reviewer`` opens these pages, and such a key opens no case
(:func:`duanka.serving.review.web.signed_in`). An approval or rejection names the SHA-256 of the
report the page showed; it is appended to the decision record as a chained ``model_reviewed``
event and tagged on the version in MLflow, where ``duanka promote`` looks for it
(:mod:`duanka.training.approval`). Every page view is appended to the record too.
"""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from duanka.serving.review.dispose import DispositionRefused, checked_note, views
from duanka.serving.review.model_desk import ReviewRefused
from duanka.serving.review.sessions import MODELS, LinkRefused, Session
from duanka.serving.review.web import (
    AREAS,
    HEADERS,
    MONITOR,
    form,
    keep_session,
    message,
    page,
    request_id,
    signed_in,
)
from duanka.serving.routes.deps import RunningService
from duanka.training.approval import DECISIONS, REVIEWED, Review, short, utc_now

router = APIRouter(prefix="/models", include_in_schema=False)
AREA = AREAS[MODELS]
ModelReviewer = Annotated[Session, Depends(signed_in(AREA))]
Version = Annotated[str, Path(pattern=r"^\d{1,9}$")]
# The report is the model report as built (inline CSS, figures as data URIs, no script): shown as
# is, in a sandbox, with nothing else allowed.
REPORT_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox",
}


def report_url(version: str) -> str:
    return f"{AREA.home}/versions/{version}/report"


@router.get("/sign-in")
async def sign_in(request: Request, svc: RunningService, token: str = "") -> Response:
    """Exchange a model reviewer's one-time link for a session cookie, then on to the versions."""
    try:
        cookie, session = await asyncio.to_thread(svc.review.sessions.exchange, token, MODELS)
    except LinkRefused as exc:
        return message("登录链接无效 Sign-in link refused", str(exc), 403, area=AREA)
    await views(svc, session, request_id(request), "models_signed_in", {})
    # moves on by itself: a SameSite=Strict cookie set while following another site's link is not
    # sent on the redirect that link started (as on /review/sign-in)
    response = page(
        "message.html.j2",
        area=AREA,
        heading="已登录 Signed in",
        text="Opening the model versions.",
        error=False,
        refresh=AREA.home,
        session=session,
    )
    for area in (AREA, MONITOR):  # one session, sent to the versions and to the monitoring
        keep_session(response, request, area, cookie)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: ModelReviewer, svc: RunningService) -> Response:
    await form(request, session)
    await asyncio.to_thread(svc.review.sessions.end, request.cookies[AREA.cookie])
    await views(svc, session, request_id(request), "models_signed_out", {})
    response = message(
        "已退出 Signed out",
        "Signed out. A new one-time link signs you in again.",
        200,
        error=False,
        area=AREA,
    )
    for area in (AREA, MONITOR):
        response.delete_cookie(area.cookie, path=area.home)
    return response


@router.get("")
async def versions(request: Request, session: ModelReviewer, svc: RunningService, done: str = "") -> Response:
    """The champion and the newest versions side by side, each with its report and review."""
    overview = await asyncio.to_thread(svc.models.overview)
    await views(
        svc,
        session,
        request_id(request),
        "models_viewed",
        {"page": "versions", "versions": [c.version for c in overview.columns]},
    )
    return page(
        "models.html.j2",
        area=AREA,
        session=session,
        overview=overview,
        done=done[:300],
        report_url=report_url,
        short=short,
    )


@router.get("/versions/{version}/report")
async def report(request: Request, version: Version, session: ModelReviewer, svc: RunningService) -> Response:
    """The model report the version's run holds now: what an approval of it names by hash."""
    html = await asyncio.to_thread(svc.models.report, version)
    await views(
        svc,
        session,
        request_id(request),
        "models_viewed",
        {"page": "report", "version": version, "shown": html is not None},
    )
    if html is None:
        return message(
            "没有报告 No report",
            f"Version {version} is not registered, or no report was built for it yet.",
            404,
            area=AREA,
        )
    return HTMLResponse(html, headers=REPORT_HEADERS)


@router.post("/versions/{version}/report")
async def build(request: Request, version: Version, session: ModelReviewer, svc: RunningService) -> Response:
    """Build the version's report (as ``duanka report`` does): a new report, which needs its own review."""
    await form(request, session)
    if await asyncio.to_thread(svc.models.run_of, version) is None:
        raise DispositionRefused(404, f"version {version} is not registered")
    sha = await asyncio.to_thread(svc.models.build_report, version)
    await views(
        svc, session, request_id(request), "model_report_built", {"version": version, "report_sha256": sha}
    )
    said = f"built the report of version {version}: {short(sha)}"
    return RedirectResponse(f"{AREA.home}?{urlencode({'done': said})}", 303, headers=HEADERS)


@router.post("/versions/{version}/review")
async def review(request: Request, version: Version, session: ModelReviewer, svc: RunningService) -> Response:
    """Approve or reject the version on the report the page showed, with a note."""
    fields = await form(request, session)
    decision = DECISIONS.get(fields.get("decision", ""))
    if decision is None:
        raise DispositionRefused(422, f"decision must be one of {', '.join(DECISIONS)}")
    note = checked_note(fields.get("note", ""), "a model review")
    if await asyncio.to_thread(svc.models.run_of, version) is None:
        raise DispositionRefused(404, f"version {version} is not registered")
    try:
        sha = await asyncio.to_thread(
            svc.models.checked_review, version, decision, fields.get("report_sha256")
        )
    except ReviewRefused as exc:
        raise DispositionRefused(409, str(exc)) from None
    given = Review(version, decision, session.key.key_id, utc_now(), note, sha, "page")
    rid = request_id(request)
    # the record first: a review in MLflow that the record lacks would let a promotion through
    # with no chained trace of who approved it
    await svc.scoring.run(
        lambda scorer: scorer.log.event(REVIEWED, given.detail(), key_id=given.by, request_id=rid)
    )
    await asyncio.to_thread(svc.models.record, given)
    said = f"{decision} version {version} on report {short(sha)}"
    return RedirectResponse(f"{AREA.home}?{urlencode({'done': said})}", 303, headers=HEADERS)

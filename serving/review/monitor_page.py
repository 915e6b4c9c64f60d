"""``/monitor``: the model report's monitoring plan on this service's decisions, for model reviewers.

The page is what ``duanka monitor`` writes (:func:`duanka.serving.monitor.render.render_html`), as
of the run it asks for when opened (:class:`duanka.serving.monitor.live.LiveMonitoring`: only the
decisions recorded since the last run are read, in a worker process). A run that takes longer
than :data:`PAGE_WAIT_S` (the first count of a long record) is not waited for: the page shows the
latest run and says a newer one is under way, or, before any, that the record is being counted.
Every view is appended to the decision record.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from duanka.serving.monitor.engine import Monitoring
from duanka.serving.monitor.render import Served, render_html
from duanka.serving.review.dispose import views
from duanka.serving.review.sessions import Session
from duanka.serving.review.web import HEADERS, MONITOR, page, request_id, signed_in
from duanka.serving.routes.deps import RunningService

router = APIRouter(prefix=MONITOR.home, include_in_schema=False)
ModelReviewer = Annotated[Session, Depends(signed_in(MONITOR))]
PAGE_WAIT_S = 5.0
# The page is self-contained (inline CSS, figures as data URIs, no script): nothing else allowed.
PAGE_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def _clock(at: float | None) -> str:
    return "—" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


@router.get("")
async def monitoring(request: Request, session: ModelReviewer, svc: RunningService) -> Response:
    """Every row of the monitoring plan with its status, as of a run up to the record."""
    live = svc.monitoring
    note = None
    try:
        shown = await asyncio.wait_for(live.refresh(), PAGE_WAIT_S)
    except TimeoutError:
        shown = live.latest
        note = f"a newer run, started at {_clock(live.started_at)}, is still counting: reload for it"
    except Exception:  # the run's failure is in live.failure, and the service's log
        shown = live.latest
        note = f"the latest run failed ({live.failure}): these are the figures of the run before"
    await views(
        svc,
        session,
        request_id(request),
        "monitor_viewed",
        {"as_of": None if shown is None else shown.as_of.isoformat(), "status": _word(shown)},
    )
    if shown is None:
        return _no_run_yet(live.failure)
    served = Served(key_id=session.key.key_id, note=note, models_url="/models")
    return HTMLResponse(render_html(shown, served), headers=PAGE_HEADERS)


def _word(shown: Monitoring | None) -> str | None:
    return None if shown is None else shown.status.word


def _no_run_yet(failure: str | None) -> HTMLResponse:
    if failure is not None:
        return page(
            "message.html.j2",
            500,
            area=MONITOR,
            heading="无法监控 Could not monitor",
            text=f"The monitoring run failed: {failure}. The service's log has the details.",
            error=True,
            refresh=None,
        )
    return page(
        "message.html.j2",
        503,
        area=MONITOR,
        heading="正在统计 Counting the record",
        text="The first monitoring run is counting the decision record (about a minute per million "
        "decisions); this page reloads itself every few seconds until it is done.",
        error=False,
        refresh=MONITOR.home,
        refresh_after=5,
    )

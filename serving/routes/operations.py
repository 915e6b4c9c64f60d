"""``GET /healthz``, ``/readyz`` and ``/metrics``: what operators and their probes read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from duanka.serving.routes.deps import RunningService
from duanka.serving.scorer import Scorer

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
async def readyz(svc: RunningService) -> JSONResponse:
    """A verified model is loaded and the state and decision record take writes."""
    if not svc.scoring.started:
        return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)

    def check(scorer: Scorer) -> tuple[bool, bool, dict[str, str]]:
        return scorer.online.writable(), scorer.log.writable(), scorer.model.describe()

    online_ok, log_ok, model = await svc.scoring.run(check)
    ready = online_ok and log_ok
    body = {"ready": ready, "model": model, "state_writable": online_ok, "audit_writable": log_ok}
    return JSONResponse(body, status_code=200 if ready else 503)


# What /metrics answers is Prometheus's text format, not JSON: the OpenAPI document says so, as a
# client generated from it (or a schema checker such as schemathesis) must know.
_EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the service's metrics in the Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=PlainTextResponse, responses=_EXPOSITION)
async def metrics(svc: RunningService) -> Response:
    """Prometheus metrics."""
    body, content_type = svc.metrics.render()
    return Response(body, media_type=content_type)

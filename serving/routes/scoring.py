"""``POST /v1/score`` and ``/v1/score/batch``: decide, record and answer.

A scoring request crosses to the scoring thread once: validation, the branch check and the
decision run there together (each handover between threads is a wait for the interpreter
lock, which is what the tail latency at a steady rate was made of). Parsing, authentication
and serialisation stay on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from duanka.serving.errors import OutOfScope
from duanka.serving.keys import ApiKey
from duanka.serving.lifecycle import Service
from duanka.serving.prepare import FieldError, prepare_applications
from duanka.serving.routes.deps import Caller, RunningService
from duanka.serving.schemas import ApplicationIn, BatchIn, BatchOut, ErrorOut, ScoreOut, v1_responses
from duanka.serving.scorer import Scored, Scorer

router = APIRouter(tags=["scoring"])

_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "an application's branch is outside the key's scope"},
    409: {"model": ErrorOut, "description": "application id already recorded (other content, or known)"},
}


async def _decide(svc: Service, request: Request, key: ApiKey, items: list[ApplicationIn]) -> list[dict]:
    """Each application's answer, in the order sent, with the request's id."""
    rows = [a.contract_fields() for a in items]
    request_id = request.scope["duanka.request_id"]
    keys = svc.config.keys

    def on_scoring_thread(scorer: Scorer) -> list[Scored]:
        events = prepare_applications(rows, keys)
        outside = [
            FieldError(i, "branch_id", f"this key may not score for branch {e['branch_id']}")
            for i, e in enumerate(events)
            if not key.may_score_for(e["branch_id"])
        ]
        if outside:
            raise OutOfScope(outside)
        return scorer.score(
            events,
            key_id=key.key_id,
            request_id=request_id,
            started=request.scope["duanka.started"],
            client_request_id=request.scope["duanka.client_request_id"],
        )

    answers = await svc.scoring.run(on_scoring_thread)
    out = []
    seen: set[str] = set()
    for answer in answers:
        aid = answer.response["application_id"]
        if answer.replayed:
            svc.metrics.replays.inc()
        elif aid not in seen:
            svc.metrics.decisions.labels(answer.response["band"]).inc()
            svc.metrics.scores.observe(answer.response["score"])
        seen.add(aid)
        out.append({**answer.response, "request_id": request_id, "replayed": answer.replayed})
    return out


@router.post("/v1/score", response_model=ScoreOut, responses=v1_responses(_FORBIDDEN))
async def score(request: Request, application: ApplicationIn, key: Caller, svc: RunningService) -> dict:
    """Score one application as of its ``applied_at`` and record it; a retry returns the same answer."""
    (answer,) = await _decide(svc, request, key, [application])
    return answer


@router.post("/v1/score/batch", response_model=BatchOut, responses=v1_responses(_FORBIDDEN))
async def score_batch(request: Request, batch: BatchIn, key: Caller, svc: RunningService) -> dict:
    """Score up to 1,000 applications; all or nothing: one defect rejects the whole batch."""
    results = await _decide(svc, request, key, batch.applications)
    return {"request_id": request.scope["duanka.request_id"], "results": results}

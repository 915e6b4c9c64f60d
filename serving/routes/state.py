"""``POST /v1/labels`` and ``/v1/watchlist``: what the live state learns besides applications."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request

from duanka.data.watchlist import append_listings
from duanka.serving.prepare import prepare_labels, prepare_listings
from duanka.serving.routes.deps import Caller, RunningService
from duanka.serving.schemas import ErrorOut, LabelsIn, LabelsOut, WatchlistIn, WatchlistOut, v1_responses

router = APIRouter(tags=["state"])


@router.post(
    "/v1/labels",
    response_model=LabelsOut,
    responses=v1_responses({403: {"model": ErrorOut, "description": "a key without the labels permission"}}),
)
async def labels(request: Request, body: LabelsIn, key: Caller, svc: RunningService) -> dict:
    """Feed confirmed mule accounts into the live state: later applications see them.

    Needs a key made with ``duanka keys create --labels``; a branch-scoped one confirms
    only its branches' applications. All or nothing: an id the service does not hold
    (for that key) rejects every row.
    """
    if not key.labels:
        raise HTTPException(
            403, "confirming mule accounts needs a key made with `duanka keys create --labels`"
        )
    prepared = await asyncio.to_thread(prepare_labels, [label.model_dump() for label in body.labels])
    request_id = request.scope["duanka.request_id"]
    changed = await svc.scoring.run(
        lambda scorer: scorer.add_labels(
            prepared, key_id=key.key_id, request_id=request_id, branches=key.branches
        )
    )
    return {"request_id": request_id, "received": len(prepared), "changed": changed}


@router.post(
    "/v1/watchlist",
    response_model=WatchlistOut,
    responses=v1_responses({403: {"model": ErrorOut, "description": "not an admin key"}}),
)
async def watchlist(request: Request, body: WatchlistIn, key: Caller, svc: RunningService) -> dict:
    """Add joint-punishment listings (or removals) to the event store; applies from the next decision.

    All or nothing: one defect rejects every row, and nothing is stored.
    """
    if not key.admin:
        raise HTTPException(403, "feeding the watchlist needs an admin key (duanka keys create --admin)")
    config = svc.config
    # The event store's files, not the scorer's SQLite: written off the scoring thread, one feed at a time.
    events = await asyncio.to_thread(
        prepare_listings, [listing.model_dump() for listing in body.listings], config.keys
    )
    async with svc.store_lock:
        appended = await asyncio.to_thread(append_listings, events, config.store, config.keys.key_id)
    request_id = request.scope["duanka.request_id"]
    counts = {
        "received": len(body.listings),
        "stored": appended.stored,
        "already_stored": appended.already_stored + appended.duplicates,
    }
    await svc.scoring.run(
        lambda scorer: scorer.listings_stored(counts, key_id=key.key_id, request_id=request_id)
    )
    return {"request_id": request_id, **counts}

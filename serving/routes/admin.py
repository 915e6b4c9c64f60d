"""``POST /v1/admin/reload``: switch to the model the alias points at now."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from duanka.serving.routes.deps import Caller, RunningService
from duanka.serving.schemas import ErrorOut, ReloadOut, v1_responses
from duanka.training.bundle import ModelIntegrityError

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    responses=v1_responses(
        {
            403: {"model": ErrorOut, "description": "not an admin key"},
            409: {"model": ErrorOut, "description": "the new model failed verification; the old one serves"},
        }
    ),
)
async def reload(request: Request, key: Caller, svc: RunningService) -> dict:
    """Load the model the URI (alias) points at now and switch to it without dropping requests."""
    if not key.admin:
        raise HTTPException(403, "reloading the model needs an admin key (duanka keys create --admin)")
    try:
        switched, model = await svc.reload(
            trigger="endpoint", key_id=key.key_id, request_id=request.scope["duanka.request_id"]
        )
    except ModelIntegrityError as exc:
        raise HTTPException(409, f"{exc}; still serving the current model") from None
    return {"switched": switched, "model": model.describe()}

"""What routes declare they need: the running service and the caller's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from duanka.serving.admission import UNAUTHENTICATED
from duanka.serving.keys import ApiKey
from duanka.serving.lifecycle import Service


def running_service(request: Request) -> Service:
    """The service the app's lifespan started (``app.state.service``, its only home)."""
    return request.app.state.service


REVIEWER_ON_API = "a reviewer key signs in to the case queue (`duanka review link`); it calls no /v1/ route"
MODEL_REVIEWER_ON_API = (
    "a model reviewer key signs in to /models (`duanka review link`) or approves with `duanka models "
    "approve`; it calls no /v1/ route"
)
_bearer = HTTPBearer(auto_error=False, description="an API key from `duanka keys create`")


async def _caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ApiKey:
    """The API key :class:`duanka.serving.admission.Admission` authenticated; 401 without one.

    ``credentials`` only declares the scheme in the OpenAPI document: the key was checked
    before the body was read.
    """
    key = request.scope.get("duanka.key")
    if key is None:
        raise HTTPException(
            401,
            UNAUTHENTICATED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if key.reviewer:
        raise HTTPException(403, REVIEWER_ON_API)
    if key.model_reviewer:
        raise HTTPException(403, MODEL_REVIEWER_ON_API)
    return key


Caller = Annotated[ApiKey, Depends(_caller)]
RunningService = Annotated[Service, Depends(running_service)]

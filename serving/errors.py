"""How errors become answers: each exception the routes may raise, mapped to its status and an
:class:`duanka.serving.schemas.ErrorOut` body that never quotes what was sent (it may be personal)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from duanka.data.wal import SyncFailed
from duanka.serving.prepare import FieldError, InvalidInput
from duanka.serving.schemas import UNKNOWN_FIELD_REASON, unknown_field
from duanka.serving.scorer import ConflictingResend

log = logging.getLogger("duanka.serve")


class OutOfScope(Exception):
    """Applications of branches the caller's key may not score for."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} application(s) outside the key's branches")
        self.errors = errors


def _error_items(errors: list[FieldError]) -> list[dict[str, object]]:
    return [{"item": e.item, "field": e.field, "reason": e.reason} for e in errors]


def _pydantic_items(errors: list[dict], *, single: bool) -> list[dict[str, object]]:
    """Pydantic's errors by item and field, without the submitted values (they may be personal).

    ``single``: the body is one application, whose fields are item 0 as in the contract's errors.
    """
    found: dict[tuple[int | None, str], list[str]] = {}
    for error in errors:
        loc = [part for part in error["loc"] if part != "body"]
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            loc[-1], msg = unknown_field(loc[-1]), UNKNOWN_FIELD_REASON
        listed = len(loc) > 1 and isinstance(loc[1], int)
        item = loc.pop(1) if listed else (0 if single and loc else None)
        # union members (str, bool, int) add their own loc part: the field is the first name
        field = ".".join(str(p) for p in loc[: 2 if listed else 1]) or "body"
        found.setdefault((item, field), [])
        if msg not in found[(item, field)]:
            found[(item, field)].append(msg)
    return [
        {"item": item, "field": field, "reason": " or ".join(msgs)} for (item, field), msgs in found.items()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Answer ``app``'s errors as docs/serving.md ("Errors") describes."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse({"detail": "the body is not valid JSON", "errors": []}, status_code=400)
        return JSONResponse(
            {
                "detail": "the request does not match the API schema",
                "errors": _pydantic_items(errors, single=request.url.path == "/v1/score"),
            },
            status_code=422,
        )

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "the input breaks the contract; nothing was recorded",
                "errors": _error_items(exc.errors),
            },
            status_code=422,
        )

    @app.exception_handler(OutOfScope)
    async def out_of_scope(request: Request, exc: OutOfScope) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "branch outside this key's scope; nothing was recorded",
                "errors": _error_items(exc.errors),
            },
            status_code=403,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: a message or a traceback may quote what was sent.
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"detail": "internal error: no score was given", "errors": []}, status_code=500)

    @app.exception_handler(SyncFailed)
    async def not_durable(request: Request, exc: SyncFailed) -> JSONResponse:
        # fail closed: what may not be on disk is not built on, now or later
        log.error("the service's files could not be synced: %s", exc)
        return JSONResponse(
            {"detail": "the service cannot make its records durable: no score was given", "errors": []},
            status_code=503,
        )

    @app.exception_handler(ConflictingResend)
    async def conflicting(request: Request, exc: ConflictingResend) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=409)

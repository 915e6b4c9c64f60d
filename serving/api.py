"""The HTTP service: FastAPI over one :class:`serving.scorer.Scorer`, for one uvicorn worker.

Everything that touches SQLite (the online state, the decision record) runs on
one dedicated thread, in arrival order: the state sees applications one at a
time, as the point-in-time replay assumes, and SQLite connections never cross
threads. A scoring request crosses to that thread once: validation, the branch
check and the decision run there together (each handover between threads is a
wait for the interpreter lock, which is what the tail latency at a steady rate
was made of). Parsing, authentication and serialisation stay on the event loop.
Loading a new model runs on yet another thread and only the swap goes through
the scoring thread, so a reload never drops or stalls a request for longer than
one decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from duanka.data.private import private_folder
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.watchlist import StoredWatchlist, append_listings
from duanka.features.online import OnlineFeatureStore
from duanka.serving.admission import UNAUTHENTICATED, Admission, AdmissionPolicy
from duanka.serving.audit import DecisionLog
from duanka.serving.keys import ApiKey, KeyFile
from duanka.serving.metrics import ServiceMetrics
from duanka.serving.scorer import (
    DEFAULT_TOLERANCE,
    ConflictingResend,
    FieldError,
    InvalidInput,
    LoadedModel,
    ModelSource,
    Scored,
    Scorer,
    prepare_applications,
    prepare_labels,
    prepare_listings,
)
from duanka.serving.state import ServingPaths, online_writable, sync_online_state
from duanka.training.bundle import ModelIntegrityError

MAX_BATCH = 1_000
MAX_LABELS = 10_000
MAX_LISTINGS = 10_000
# A full batch of 1,000 applications is about 0.6 MB of JSON; anything far larger is a mistake.
MAX_BODY_BYTES = 4 * 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Label values a client cannot grow: any other method is counted as "other".
_METHODS = frozenset({"GET", "POST"})
_ROUTES = (
    "/v1/score",
    "/v1/score/batch",
    "/v1/labels",
    "/v1/watchlist",
    "/v1/admin/reload",
    "/healthz",
    "/readyz",
    "/metrics",
)
_ERROR_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}
_ERROR_KINDS |= {413: "too_large", 422: "invalid_input", 503: "unavailable"}

log = logging.getLogger("duanka.serve")
T = TypeVar("T")

# Every text of a request: a bounded length, UTF-8 text (a lone surrogate such as "\ud800" is
# valid JSON but no text), and no control or bidirectional-override character, which no
# identifier, date, code or address of the contract holds and which can hide what a string says.
MAX_TEXT_CHARS = 256
MAX_ADDRESS_CHARS = 512
MAX_IGNORED_FIELDS = 32
_HIDDEN = re.compile("[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def checked_text(value: T, limit: int = MAX_TEXT_CHARS) -> T:
    """``value`` when it is text a contract field may hold, or not text at all (a number, a flag);
    else why not (never the value itself)."""
    if not isinstance(value, str):
        return value
    if len(value) > limit:
        raise ValueError(f"{len(value):,} characters, more than the {limit} a field may hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not text: it holds a lone surrogate code point (\\ud800-\\udfff)") from None
    if _HIDDEN.search(value):
        raise ValueError("holds a control character (such as NUL or a line break) or a bidirectional mark")
    return value


Text = Annotated[StrictStr | None, AfterValidator(checked_text), Field(default=None)]
LongText = Annotated[
    StrictStr | None, AfterValidator(lambda v: checked_text(v, MAX_ADDRESS_CHARS)), Field(default=None)
]
Flag = Annotated[StrictBool | StrictStr | None, AfterValidator(checked_text), Field(default=None)]
Count = Annotated[StrictInt | StrictStr | None, AfterValidator(checked_text), Field(default=None)]

_EXAMPLE = {
    "application_id": "A000150001",
    "applied_at": "2025-06-30T10:12:00+08:00",
    "branch_id": "B4401040",
    "branch_region": "440104",
    "channel": "counter",
    "account_type": "personal",
    "staff_id": "S44010401",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
    "phone_tenure_days": 12,
    "address": "广州市越秀区荔城大道141号4楼",
    "device_id": None,
    "escort_id": None,
    "intermediary_id": None,
    "photo_tampered": False,
    "onsite_verified": None,
    "company_id": None,
    "company_age_days": None,
    "u_shield": True,
    "mobile_banking": True,
    "payment_binding": True,
}


class ApplicationIn(BaseModel):
    """One account-opening application in the input contract's fields (docs/contract.md).

    Values are judged by the contract validator exactly as in a file: booleans
    may also be ``"true"``/``"false"``/``"1"``/``"0"``, integers may be digit
    strings. Missing required fields are reported, never guessed. Fields the
    contract does not name are ignored and listed in ``ignored_fields``.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_EXAMPLE]})

    application_id: Text
    applied_at: Text = Field(default=None, description="ISO 8601; naive values are Asia/Shanghai time")
    branch_id: Text
    branch_region: Text = Field(default=None, description="6-digit GB/T 2260 code")
    channel: Text = Field(default=None, description="counter, mobile or agent")
    account_type: Text = Field(default=None, description="personal or corporate")
    staff_id: Text
    id_number: Text = Field(
        default=None, description="18-character resident ID (pseudonymised, never stored)"
    )
    phone: Text = Field(default=None, description="11-digit mobile number (pseudonymised, never stored)")
    phone_tenure_days: Count
    address: LongText = Field(default=None, description="address as written (pseudonymised, never stored)")
    device_id: Text
    escort_id: Text
    intermediary_id: Text
    photo_tampered: Flag
    onsite_verified: Flag
    company_id: Text
    company_age_days: Count
    u_shield: Flag
    mobile_banking: Flag
    payment_binding: Flag

    @model_validator(mode="after")
    def _ignored_names_are_text(self) -> ApplicationIn:
        extra = self.model_extra or {}
        if len(extra) > MAX_IGNORED_FIELDS:
            raise ValueError(f"{len(extra)} fields the contract does not name; at most {MAX_IGNORED_FIELDS}")
        for name in extra:
            checked_text(name, 64)
        return self

    def contract_fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def ignored(self) -> list[str]:
        return sorted(self.model_extra or ())


class BatchIn(BaseModel):
    """Up to 1,000 applications, scored in (applied_at, application_id) order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"applications": [_EXAMPLE]}]})

    applications: list[ApplicationIn] = Field(min_length=1, max_length=MAX_BATCH)


class LabelIn(BaseModel):
    """One confirmed mule account (the contract's labels table)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "application_id": "A000140001",
                    "confirmed_at": "2025-07-02T16:00:00+08:00",
                    "source": "police_notice",
                }
            ]
        },
    )

    application_id: Text
    confirmed_at: Text
    source: Text = Field(
        default=None,
        description="police_notice, account_freeze, investigation or review (the bank's own team)",
    )


class LabelsIn(BaseModel):
    labels: list[LabelIn] = Field(min_length=1, max_length=MAX_LABELS)


class ListingIn(BaseModel):
    """One row of the joint-punishment list (the contract's watchlist table)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "id_number": "11010519491231002X",
                    "listed_at": "2025-05-20T00:00:00+08:00",
                    "expires_at": None,
                    "source": "pboc_joint_punishment",
                }
            ]
        },
    )

    id_number: Text = Field(
        default=None, description="18-character resident ID (pseudonymised, never stored)"
    )
    listed_at: Text = Field(default=None, description="from when the listing applies (ISO 8601)")
    expires_at: Text = Field(
        default=None,
        description="when it ends; empty: 5 years after listed_at. An earlier one than received before "
        "for the same person, source and listed_at ends the listing then (a removal)",
    )
    source: Text = Field(default=None, description="who listed the person, e.g. pboc_joint_punishment")


class WatchlistIn(BaseModel):
    listings: list[ListingIn] = Field(min_length=1, max_length=MAX_LISTINGS)


class ReasonOut(BaseModel):
    code: str = Field(description="stable catalogue code (training/reasons.toml)")
    family: str
    feature: str = Field(description="the code's feature that contributed most; for a rule, the rule")
    value: float | None = Field(description="that feature's value; null when the entity is absent, or a rule")
    contribution: float | None = Field(
        description="summed TreeSHAP contribution of the code's features, log-odds; null for a rule"
    )
    text_zh: str
    text_en: str


class ModelOut(BaseModel):
    name: str
    version: str
    booster_sha256: str
    bundle_sha256: str = Field(
        default="",
        description="of bundle.json (calibrator, band cuts); empty in answers given before it was recorded",
    )


_SCORE_EXAMPLE = {
    "request_id": "3f2a9c0e5b8d4e7f9a1b2c3d4e5f6a7b",
    "application_id": "A000150001",
    "score": 0.4123,
    "band": "high",
    "action": "enhanced_due_diligence",
    "action_zh": "开展强化尽职调查（核实开户意愿与用途）",
    "action_en": "Enhanced due diligence: verify the purpose and the applicant's own intent",
    "reasons": [
        {
            "code": "NEW_SIM",
            "family": "phone_device",
            "feature": "phone_tenure_days",
            "value": 12.0,
            "contribution": 0.91,
            "text_zh": "手机号入网仅12天",
            "text_en": "The phone number was activated only 12 days ago",
        }
    ],
    "model": {"name": "duanka", "version": "3", "booster_sha256": "fb4947…"},
    "features": {"phone_tenure_days": 12.0, "escort_applicants_30d": None},
    "replayed": False,
    "ignored_fields": [],
}


class ScoreOut(BaseModel):
    """The decision for one application."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCORE_EXAMPLE]})

    request_id: str
    application_id: str
    score: float = Field(
        description="calibrated probability that the account is a mule (computed even when a rule decides)"
    )
    band: str = Field(description="critical, high, medium or low; blocked when a hard rule refuses")
    action: str
    action_zh: str
    action_en: str
    reasons: list[ReasonOut] = Field(description="up to 3 codes that raise the risk, largest first")
    rule: str | None = Field(
        default=None, description="the hard rule that decided (watchlist); null when the model did"
    )
    model_band: str | None = Field(
        default=None, description="the band the score alone gives, for monitoring; the decision is band"
    )
    model: ModelOut
    features: dict[str, float | None] = Field(description="the model's inputs, in MODEL_FEATURES order")
    replayed: bool = Field(description="true when this application id was scored before: the stored answer")
    ignored_fields: list[str] = Field(description="submitted fields the contract does not name")


class BatchOut(BaseModel):
    request_id: str
    results: list[ScoreOut]


class LabelsOut(BaseModel):
    request_id: str
    received: int
    changed: int = Field(description="confirmations that were new, or earlier than the one held")


class WatchlistOut(BaseModel):
    request_id: str
    received: int
    stored: int = Field(description="listings new to the store")
    already_stored: int = Field(description="listings received before (re-sending changes nothing)")


class ErrorItem(BaseModel):
    item: int | None = Field(
        description="position in the batch (0 for a single application); null when about the whole body"
    )
    field: str
    reason: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[ErrorItem] = []


class ReloadOut(BaseModel):
    switched: bool
    model: ModelOut


# What every /v1 route may answer besides its own errors (docs/serving.md, "Errors").
_V1_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    401: {"model": ErrorOut, "description": "no API key, or an unknown or revoked one"},
    408: {"model": ErrorOut, "description": "the headers or the body took too long to arrive"},
    413: {"model": ErrorOut, "description": "the body is over 4 MiB"},
    422: {"model": ErrorOut, "description": "the input breaks the contract; every defect is listed"},
    429: {"model": ErrorOut, "description": "over the key's rate; see Retry-After"},
    503: {"model": ErrorOut, "description": "too many requests in flight; see Retry-After"},
}


def _v1(own: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    return {**_V1_ERRORS, **own}


@dataclass
class ServiceConfig:
    """What the service runs on.

    Attributes
    ----------
    source : ModelSource
        Where the model comes from; an alias URI is followed on reload.
    model : LoadedModel
        The model to start with, already verified (fail closed before binding a port).
    keys : Pseudonymiser
        The pseudonym key the event store was ingested with.
    store : EventStore
        The ingested events the online state starts from.
    paths : ServingPaths
        The service's files.
    poll_seconds : float
        How often to check whether the alias moved; 0 disables polling.
    chain_key : bytes, optional
        The decision record's chain key (:func:`serving.chain.chain_key`); derived from
        ``keys`` when not given.
    anchor_every_s : float
        How often the record's head (:meth:`serving.audit.DecisionLog.head`) is logged.
    tolerance : timedelta
        How far an application may be dated before the newest recorded one or after the clock
        (:class:`serving.scorer.Scorer`).
    admission : AdmissionPolicy
        Rate, concurrency and read-time limits on clients (:mod:`serving.admission`).
    """

    source: ModelSource
    model: LoadedModel
    keys: Pseudonymiser
    store: EventStore
    paths: ServingPaths
    poll_seconds: float = 0.0
    chain_key: bytes | None = None
    anchor_every_s: float = 600.0
    tolerance: timedelta = DEFAULT_TOLERANCE
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)


class Service:
    """The running service's parts; built in the app's lifespan."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.keyfile = KeyFile(config.paths.keys)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duanka-scorer")
        self.scorer: Scorer | None = None
        self.reload_lock = asyncio.Lock()
        self.refused_version: str | None = None
        self.watchlist_lock = asyncio.Lock()  # one watchlist feed writes to the event store at a time

    async def on_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the scoring thread, after everything queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def open(self) -> Scorer:
        """On the scoring thread: open the state, bring it up to the event store, audit the start."""
        config = self.config
        private_folder(config.paths.root)
        # Not fsynced per application: the decision record is (the Scorer's redo log). Checkpoints
        # run in the background, so no request waits for one.
        online = OnlineFeatureStore(config.paths.online, durable=False, checkpoint_every_s=0.5)
        added = sync_online_state(online, config.store, config.paths.sync_marker, config.keys.key_id)
        chain_key = config.chain_key or config.keys.audit_chain_key()
        decisions = DecisionLog(config.paths.decisions, chain_key=chain_key, checkpoint_every_s=0.5)
        watchlist = StoredWatchlist(config.store)
        listings = len(watchlist.current())  # read now, not on the first request
        scorer = Scorer(config.model, online, decisions, config.keys, watchlist, tolerance=config.tolerance)
        redone = scorer.redo()
        online.warm()
        decisions.event(
            "model_loaded",
            {
                **config.model.describe(),
                "uri": config.source.uri,
                "state_added": added,
                "state_redone": redone,
                "watchlist": listings,
            },
            key_id=None,
            request_id=None,
        )
        return scorer

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
            self.scorer.online.close()
            self.scorer.log.close()

    async def reload(
        self, *, trigger: str, key_id: str | None, request_id: str | None
    ) -> tuple[bool, LoadedModel]:
        """Load what the source points at now and switch to it; the old model serves meanwhile.

        Raises
        ------
        ModelIntegrityError
            The new model fails verification; the current one stays, and the refusal is audited.
        """
        scorer = self.scorer
        assert scorer is not None
        async with self.reload_lock:
            try:
                model = await asyncio.to_thread(self.config.source.load)
            except ModelIntegrityError as exc:
                self.metrics.reloads.labels("refused").inc()
                detail = {"trigger": trigger, "reason": str(exc), "kept_version": scorer.model.version}
                await self.on_thread(
                    lambda: scorer.log.event(
                        "model_reload_refused", detail, key_id=key_id, request_id=request_id
                    )
                )
                raise
            switched = await self.on_thread(
                lambda: scorer.switch(model, trigger=trigger, key_id=key_id, request_id=request_id)
            )
        self.metrics.reloads.labels("switched" if switched else "unchanged").inc()
        self.metrics.model_in_use(model.version, model.booster_sha256)
        if switched:
            settle_heap()
        return switched, model

    async def poll(self) -> None:
        """Follow the alias: reload whenever it points at another version."""
        scorer = self.scorer
        assert scorer is not None
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                version = await asyncio.to_thread(self.config.source.current_version)
                # a version refused once is not retried (and audited) every poll: an admin reload still can
                if version not in (scorer.model.version, self.refused_version):
                    await self.reload(trigger="poll", key_id=None, request_id=None)
            except ModelIntegrityError:
                self.refused_version = version
            except Exception:  # a registry hiccup must not stop polling or serving
                log.exception("model poll failed; keeping version %s", scorer.model.version)

    async def log_anchor(self) -> None:
        """Log the decision record's head now and every ``anchor_every_s``: the anchor an
        operator keeps elsewhere (``duanka audit verify --anchor``), since a chain alone cannot
        see its tail cut or the whole file rolled back."""
        scorer = self.scorer
        assert scorer is not None
        while True:
            log.info("audit anchor %s", scorer.log.head().text())
            await asyncio.sleep(self.config.anchor_every_s)


class OutOfScope(Exception):
    """Applications of branches the caller's key may not score for."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} application(s) outside the key's branches")
        self.errors = errors


def _client_request_id(scope: dict) -> str | None:
    """The caller's ``X-Request-ID`` when it is well formed; kept beside the server's own id."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
    return None


class _Observe:
    """ASGI middleware: request id, body-size limit, and the request metrics.

    Plain ASGI rather than ``BaseHTTPMiddleware``: it adds microseconds, not a task per request.
    """

    def __init__(self, app: Callable, metrics: Callable[[], ServiceMetrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # the audit's request id is the server's own: a caller cannot make two requests share one
        request_id = uuid.uuid4().hex
        client_request_id = _client_request_id(scope)
        scope["duanka.started"] = started
        scope["duanka.request_id"] = request_id
        scope["duanka.client_request_id"] = client_request_id
        echoed = [(b"x-request-id", request_id.encode("ascii"))]
        if client_request_id is not None:
            echoed.append((b"x-client-request-id", client_request_id.encode("ascii")))
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *echoed]
            await send(message)

        received = 0
        refused = False

        async def receive_limited() -> dict:
            # A chunked body has no Content-Length: count what arrives, or it could be any size.
            # Past the limit, answer 413 now and tell the app the client left, so it stops reading.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    refused = True
                    await too_large(scope, receive, send_with_id)
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: dict) -> None:
            if not refused:
                await send_with_id(message)

        too_large = JSONResponse(
            {
                "detail": f"request body over {MAX_BODY_BYTES} bytes; "
                f"send at most {MAX_BATCH} applications per batch"
            },
            status_code=413,
        )
        try:
            length = dict(scope.get("headers", ())).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                await too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_unless_refused)
        finally:
            path = scope["path"]
            route = path if path in _ROUTES else "other"
            metrics = self.metrics()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            metrics.requests.labels(route, method, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
            if status >= 400:
                metrics.errors.labels(route, _ERROR_KINDS.get(status, "internal")).inc()


def _error_items(errors: list[FieldError]) -> list[dict[str, object]]:
    return [{"item": e.item, "field": e.field, "reason": e.reason} for e in errors]


def _pydantic_items(errors: list[dict], *, single: bool) -> list[dict[str, object]]:
    """Pydantic's errors by item and field, without the submitted values (they may be personal).

    ``single``: the body is one application, whose fields are item 0 as in the contract's errors.
    """
    found: dict[tuple[int | None, str], list[str]] = {}
    for error in errors:
        loc = [part for part in error["loc"] if part != "body"]
        listed = len(loc) > 1 and isinstance(loc[1], int)
        item = loc.pop(1) if listed else (0 if single and loc else None)
        # union members (str, bool, int) add their own loc part: the field is the first name
        field = ".".join(str(p) for p in loc[: 2 if listed else 1]) or "body"
        found.setdefault((item, field), [])
        if error["msg"] not in found[(item, field)]:
            found[(item, field)].append(error["msg"])
    return [
        {"item": item, "field": field, "reason": " or ".join(msgs)} for (item, field), msgs in found.items()
    ]


_bearer = HTTPBearer(auto_error=False, description="an API key from `duanka keys create`")


async def _caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ApiKey:
    """The API key :class:`serving.admission.Admission` authenticated; 401 without one.

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
    return key


Caller = Annotated[ApiKey, Depends(_caller)]


def settle_heap() -> None:
    """Put what the service loaded (libraries, model, explainer) out of the collector's sight.

    A full collection walks every tracked object: with the libraries and a model loaded,
    about 240,000 of them and 100+ ms here, paid by whichever requests are in flight. Frozen
    (``gc.freeze``), they are skipped. After a model switch, the old model is unfrozen and
    collected once, and what remains is frozen again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application for one model, one state folder and one key file."""
    holder: dict[str, Service] = {}  # filled by the lifespan; read by the middleware and the routes

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(config)
        holder["service"] = app.state.service = service
        service.scorer = await service.on_thread(service.open)
        service.metrics.model_in_use(config.model.version, config.model.booster_sha256)
        settle_heap()
        service.metrics.watch_gc()
        tasks = [asyncio.create_task(service.log_anchor())]
        if config.poll_seconds > 0 and config.source.alias is not None:
            tasks.append(asyncio.create_task(service.poll()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await service.on_thread(service.close)
            service.executor.shutdown(wait=True)
            service.metrics.unwatch_gc()

    # Swagger UI's assets from the installed package: a bank intranet reaches no CDN
    app = FastAPIOffline(
        title="duanka scoring service",
        summary="Money-mule risk scores for account openings (断卡), with reasons in Chinese and English.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(
        Admission,
        policy=config.admission,
        authenticate=lambda token: holder["service"].keyfile.authenticate(token),
    )
    app.add_middleware(_Observe, metrics=lambda: holder["service"].metrics)

    def service() -> Service:
        return holder["service"]

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

    @app.exception_handler(ConflictingResend)
    async def conflicting(request: Request, exc: ConflictingResend) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=409)

    async def decide(request: Request, key: ApiKey, items: list[ApplicationIn]) -> list[dict]:
        svc = service()
        scorer = svc.scorer
        assert scorer is not None
        rows = [a.contract_fields() for a in items]
        request_id = request.scope["duanka.request_id"]

        def on_scoring_thread() -> list[Scored]:
            events = prepare_applications(rows, svc.config.keys)
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

        answers = await svc.on_thread(on_scoring_thread)
        out = []
        seen: set[str] = set()
        for item, answer in zip(items, answers, strict=True):
            aid = answer.response["application_id"]
            if answer.replayed:
                svc.metrics.replays.inc()
            elif aid not in seen:
                svc.metrics.decisions.labels(answer.response["band"]).inc()
                svc.metrics.scores.observe(answer.response["score"])
            seen.add(aid)
            out.append(
                {
                    **answer.response,
                    "request_id": request_id,
                    "replayed": answer.replayed,
                    "ignored_fields": item.ignored(),
                }
            )
        return out

    forbidden: dict[int | str, dict[str, Any]] = {
        403: {"model": ErrorOut, "description": "an application's branch is outside the key's scope"},
        409: {"model": ErrorOut, "description": "application id already recorded (other content, or known)"},
    }

    @app.post("/v1/score", response_model=ScoreOut, responses=_v1(forbidden), tags=["scoring"])
    async def score(request: Request, application: ApplicationIn, key: Caller) -> dict:
        """Score one application as of its ``applied_at`` and record it; a retry returns the same answer."""
        (answer,) = await decide(request, key, [application])
        return answer

    @app.post("/v1/score/batch", response_model=BatchOut, responses=_v1(forbidden), tags=["scoring"])
    async def score_batch(request: Request, batch: BatchIn, key: Caller) -> dict:
        """Score up to 1,000 applications; all or nothing: one defect rejects the whole batch."""
        results = await decide(request, key, batch.applications)
        return {"request_id": request.scope["duanka.request_id"], "results": results}

    @app.post(
        "/v1/labels",
        response_model=LabelsOut,
        responses=_v1({403: {"model": ErrorOut, "description": "a key without the labels permission"}}),
        tags=["state"],
    )
    async def labels(request: Request, body: LabelsIn, key: Caller) -> dict:
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
        svc = service()
        scorer = svc.scorer
        assert scorer is not None
        request_id = request.scope["duanka.request_id"]
        changed = await svc.on_thread(
            lambda: scorer.add_labels(
                prepared, key_id=key.key_id, request_id=request_id, branches=key.branches
            )
        )
        return {"request_id": request_id, "received": len(prepared), "changed": changed}

    @app.post(
        "/v1/watchlist",
        response_model=WatchlistOut,
        responses=_v1({403: {"model": ErrorOut, "description": "not an admin key"}}),
        tags=["state"],
    )
    async def watchlist(request: Request, body: WatchlistIn, key: Caller) -> dict:
        """Add joint-punishment listings (or removals) to the event store; applies from the next decision.

        All or nothing: one defect rejects every row, and nothing is stored.
        """
        if not key.admin:
            raise HTTPException(403, "feeding the watchlist needs an admin key (duanka keys create --admin)")
        svc = service()
        scorer = svc.scorer
        assert scorer is not None
        events = await asyncio.to_thread(
            prepare_listings, [listing.model_dump() for listing in body.listings], config.keys
        )
        async with svc.watchlist_lock:
            appended = await asyncio.to_thread(append_listings, events, config.store, config.keys.key_id)
        request_id = request.scope["duanka.request_id"]
        counts = {
            "received": len(body.listings),
            "stored": appended.stored,
            "already_stored": appended.already_stored + appended.duplicates,
        }
        await svc.on_thread(lambda: scorer.listings_stored(counts, key_id=key.key_id, request_id=request_id))
        return {"request_id": request_id, **counts}

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadOut,
        responses=_v1(
            {
                403: {"model": ErrorOut, "description": "not an admin key"},
                409: {
                    "model": ErrorOut,
                    "description": "the new model failed verification; the old one serves",
                },
            }
        ),
        tags=["admin"],
    )
    async def reload(request: Request, key: Caller) -> dict:
        """Load the model the URI (alias) points at now and switch to it without dropping requests."""
        if not key.admin:
            raise HTTPException(403, "reloading the model needs an admin key (duanka keys create --admin)")
        try:
            switched, model = await service().reload(
                trigger="endpoint", key_id=key.key_id, request_id=request.scope["duanka.request_id"]
            )
        except ModelIntegrityError as exc:
            raise HTTPException(409, f"{exc}; still serving the current model") from None
        return {"switched": switched, "model": model.describe()}

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """A verified model is loaded and the state and decision record take writes."""
        svc = service()
        scorer = svc.scorer
        if scorer is None:
            return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
        online_ok, log_ok = await svc.on_thread(
            lambda: (online_writable(config.paths.online), scorer.log.writable())
        )
        ready = online_ok and log_ok
        body = {
            "ready": ready,
            "model": scorer.model.describe(),
            "state_writable": online_ok,
            "audit_writable": log_ok,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        body, content_type = service().metrics.render()
        return Response(body, media_type=content_type)

    return app

"""Scoring one application at a time against the live state: the service's core, no HTTP.

Fail closed: a model is only used after its booster hash matches the registry's
record (:func:`training.bundle.load_registered`), its feature definitions are
this code's (:data:`features.registry.FEATURE_SET_VERSION`) and its signature is
:data:`features.registry.MODEL_FEATURES` in order. Anything else raises
:class:`training.bundle.ModelIntegrityError`: no model, no score.

A raw application is validated and pseudonymised exactly as ingestion does it, one
record at a time (:mod:`data.record`, held to the column path by its tests), then its features come from
the online state as of its ``applied_at``, it is recorded into that state, and
the response is stored by application id, so a retry gets the same answer and
counts once. An applicant on the joint-punishment list at ``applied_at`` is refused
by rule (:mod:`serving.rules`), whatever the score; the same list feeds the online
state's listing features, so the rule and the features always read one list. A
:class:`Scorer` and everything it holds is used from one thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST, Table
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import RawTable
from duanka.data.record import application_event, trimmed, validate_record
from duanka.data.validate import conflict_reason, validate
from duanka.data.watchlist import (
    EXPIRES_BEFORE_LISTED,
    Watchlist,
    WatchlistSource,
    expiry_problems,
    listing_events,
)
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_SET_VERSION, MODEL_FEATURES
from duanka.serving.audit import DecisionLog, DecisionRow, utc_now
from duanka.serving.band_refresh import RecentScores
from duanka.serving.rules import refusal, refusal_action
from duanka.training.bands import ACTION_TEXT, ACTIONS, BLOCKED, Bands
from duanka.training.bundle import MODEL_NAME, ModelIntegrityError, RegisteredModel, load_registered
from duanka.training.explain import Reason, ReasonExplainer

REQUEST_SOURCE = "request"
_KEY = "application_id"
_NOT_A_VALUE = "not a contract value: send a string, boolean or number"
TOP_REASONS = 3
DEFAULT_TOLERANCE = timedelta(minutes=10)


def check_compatible(model: RegisteredModel) -> None:
    """Refuse a model this code cannot feed.

    Raises
    ------
    ModelIntegrityError
        Its feature set version or its feature list differs from this code's.
    """
    bundle = model.bundle
    if bundle.feature_set_version != FEATURE_SET_VERSION:
        raise ModelIntegrityError(
            f"{model.uri} (version {model.version}) was trained on feature set "
            f"{bundle.feature_set_version}, this code computes {FEATURE_SET_VERSION}: "
            "refusing to score with features it was not trained on; retrain or deploy the matching code"
        )
    if list(bundle.feature_names) != list(MODEL_FEATURES):
        missing = sorted(set(MODEL_FEATURES) - set(bundle.feature_names))
        extra = sorted(set(bundle.feature_names) - set(MODEL_FEATURES))
        raise ModelIntegrityError(
            f"{model.uri} (version {model.version}) expects other inputs than this code's MODEL_FEATURES "
            f"(missing {missing or 'none'}, unexpected {extra or 'none'}, or another order): refusing to load"
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified, compatible model and its explainer, ready to score."""

    registered: RegisteredModel
    explainer: ReasonExplainer

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def booster_sha256(self) -> str:
        return self.registered.bundle.booster_sha256

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "booster_sha256": self.booster_sha256,
            "bundle_sha256": self.registered.bundle_sha256,
        }


class ModelSource:
    """A registry URI (``models:/duanka@champion`` or ``models:/duanka/3``) and how to load it.

    Parameters
    ----------
    uri : str
        Registry URI; an alias URI follows the alias when reloaded.
    client : mlflow.MlflowClient
        Registry client (:func:`training.tracking.configure`).
    signing_key : bytes, optional
        Require every version loaded to be signed with it (:mod:`training.signing`).
    """

    def __init__(self, uri: str, client: mlflow.MlflowClient, signing_key: bytes | None = None) -> None:
        self.uri = uri
        self.client = client
        self.signing_key = signing_key

    @property
    def alias(self) -> str | None:
        _, _, alias = self.uri.removeprefix("models:/").partition("@")
        return alias or None

    def load(self) -> LoadedModel:
        """Load, verify and check the model the URI points at now.

        Raises
        ------
        ModelIntegrityError
            Unknown URI, tampered booster, or a model this code cannot feed.
        """
        registered = load_registered(self.uri, self.client, self.signing_key)
        check_compatible(registered)
        return LoadedModel(registered, ReasonExplainer(registered.bundle, top_k=TOP_REASONS))

    def current_version(self) -> str:
        """The version the alias points at now (cheap: one registry read)."""
        if self.alias is None:
            return self.uri.rsplit("/", 1)[-1]
        return str(self.client.get_model_version_by_alias(MODEL_NAME, self.alias).version)


@dataclass(frozen=True)
class FieldError:
    """One defect of one submitted item; never quotes a personal value."""

    item: int
    field: str
    reason: str


class InvalidInput(ValueError):
    """Submitted items break the contract; nothing was recorded."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} field error(s)")
        self.errors = errors


class ConflictingResend(ValueError):
    """An application id already recorded with other content, or recorded from the event store;
    nothing was recorded. One answer whichever it was and wherever it came from, so that the
    409 tells a branch nothing about another branch's applications."""

    def __init__(self, application_ids: list[str]) -> None:
        super().__init__(
            "application_id already recorded: "
            + ", ".join(application_ids)
            + " (an application id names one application; send changes as a new application)"
        )
        self.application_ids = application_ids


def canonical_text(value: object) -> str | None:
    """A submitted value as the contract reader would hold it: the validator then judges it.

    Booleans become ``true``/``false``, integers their digits and floats their
    ``repr`` (so ``12.0`` is rejected as an integer, as in a Parquet file);
    an empty string is missing.

    Raises
    ------
    TypeError
        For values no contract file can hold (lists, objects).
    """
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(type(value).__name__)


def _raw_table(rows: Sequence[Mapping[str, object]], table: Table) -> tuple[RawTable, list[FieldError]]:
    """The rows as the contract reader would hold them, and the values no contract file can hold."""
    errors: list[FieldError] = []
    columns: dict[str, list[str | None]] = {name: [] for name in table.names}
    for item, row in enumerate(rows):
        for name in table.names:
            try:
                columns[name].append(canonical_text(row.get(name)))
            except TypeError:
                errors.append(FieldError(item, name, _NOT_A_VALUE))
                columns[name].append(None)
    frame = pd.DataFrame(columns, dtype=object)
    frame["row"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    return RawTable(frame=frame, extra_columns=(), source=REQUEST_SOURCE), errors


def _defects(rows: Sequence[Mapping[str, object]], table: Table) -> tuple[pd.DataFrame, list[FieldError]]:
    """Valid typed rows, and every defect: wrong JSON types first, then the validator's findings."""
    raw, errors = _raw_table(rows, table)
    checked = validate(raw, table)
    wrong_type = {(e.item, e.field) for e in errors}
    lines = checked.rejections
    for row, column, reason in zip(lines["row"], lines["column"], lines["reason"], strict=True):
        if (int(row) - 1, column) not in wrong_type:  # its value was dropped as unreadable: said already
            errors.append(FieldError(int(row) - 1, str(column), str(reason)))
    position = {name: i for i, name in enumerate(table.names)}
    return checked.valid, sorted(errors, key=lambda e: (e.item, position[e.field]))


def prepare_applications(rows: Sequence[Mapping[str, object]], keys: Pseudonymiser) -> list[dict]:
    """Validate and pseudonymise submitted applications exactly as ingestion does.

    Parameters
    ----------
    rows : sequence of mapping
        Contract fields by name; absent fields are missing values, others are ignored.
    keys : Pseudonymiser
        The key the state was built with.

    Returns
    -------
    list of dict
        One :data:`data.events.APPLICATION_EVENTS` row per submitted item, in
        order; an exact repeat within ``rows`` gets the same event as its first.

    Raises
    ------
    InvalidInput
        Every defect of every item, as the contract validator words it.
    """
    errors: list[FieldError] = []
    events: list[dict] = []
    # trimmed application id -> (item, trimmed contract values, event or None) of its first item
    first: dict[str, tuple[int, dict[str, str | None], dict | None]] = {}
    for item, row in enumerate(rows):
        record: dict[str, str | None] = {}
        for name in APPLICATIONS.names:
            try:
                record[name] = canonical_text(row.get(name))
            except TypeError:
                errors.append(FieldError(item, name, _NOT_A_VALUE))
                record[name] = None
        unreadable = {e.field for e in errors if e.item == item}
        texts = {name: trimmed(text) for name, text in record.items()}
        key = texts[_KEY]
        earlier = first.get(key) if key is not None else None
        typed, defects = validate_record(record)
        if earlier is not None and earlier[1] != texts:
            defects.insert(0, (_KEY, conflict_reason(earlier[0] + 1, _KEY)))
        # an unreadable value was dropped and its field named already
        errors += [FieldError(item, column, reason) for column, reason in defects if column not in unreadable]
        if earlier is not None:
            # an exact repeat gets its first item's event, as the validator drops it from a file
            events.append(earlier[2])  # type: ignore[arg-type]
            continue
        event = None if typed is None else application_event(typed, keys)
        if key is not None:
            first[key] = (item, texts, event)
        events.append(event)  # type: ignore[arg-type]
    if errors:
        position = {name: i for i, name in enumerate(APPLICATIONS.names)}
        raise InvalidInput(sorted(errors, key=lambda e: (e.item, position[e.field])))
    return events


def prepare_labels(rows: Sequence[Mapping[str, object]]) -> list[dict]:
    """Validate submitted confirmations against the contract's labels table.

    Returns
    -------
    list of dict
        ``application_id``, ``confirmed_at`` (aware datetime, UTC) and ``source``, one per distinct row.

    Raises
    ------
    InvalidInput
        Every defect of every item.
    """
    valid, errors = _defects(rows, LABELS)
    if errors:
        raise InvalidInput(errors)
    return [
        {"application_id": a, "confirmed_at": at.to_pydatetime(), "source": s}
        for a, at, s in zip(valid["application_id"], valid["confirmed_at"], valid["source"], strict=True)
    ]


def prepare_listings(rows: Sequence[Mapping[str, object]], keys: Pseudonymiser) -> pd.DataFrame:
    """Validate and pseudonymise submitted watchlist rows exactly as ``duanka ingest --watchlist`` does.

    Returns
    -------
    pandas.DataFrame
        :data:`data.events.WATCHLIST_EVENTS` rows, one per submitted item; the raw ID numbers are gone.

    Raises
    ------
    InvalidInput
        Every defect of every item (an ``expires_at`` before its ``listed_at`` included).
    """
    valid, errors = _defects(rows, WATCHLIST)
    early = expiry_problems(valid)
    errors += [
        FieldError(int(row) - 1, "expires_at", EXPIRES_BEFORE_LISTED) for row in valid.loc[early, "row"]
    ]
    if errors:
        position = {name: i for i, name in enumerate(WATCHLIST.names)}
        raise InvalidInput(sorted(errors, key=lambda e: (e.item, position[e.field])))
    return listing_events(valid, keys)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _reason(reason: Reason) -> dict[str, object]:
    return {
        "code": reason.code,
        "family": reason.family,
        "feature": reason.feature,
        "value": _number(reason.value),
        "contribution": float(reason.contribution),
        "text_zh": reason.text_zh,
        "text_en": reason.text_en,
    }


@dataclass(frozen=True)
class Scored:
    """The answer for one application: what the caller gets, and whether it was a replay."""

    response: dict
    replayed: bool


class Scorer:
    """Scores prepared applications against the online state and records every decision.

    Parameters
    ----------
    model : LoadedModel
        The model to start with; :meth:`switch` replaces it between requests.
    online : OnlineFeatureStore
        The live feature state.
    log : DecisionLog
        The audit trail and stored responses.
    keys : Pseudonymiser
        The pseudonym key of the state (for :meth:`score_application`).
    watchlist : WatchlistSource, optional
        The joint-punishment list, read once per request (the service follows the event
        store: :class:`data.watchlist.StoredWatchlist`); no listing when not given. Each
        new snapshot of it is fed to ``online`` (:meth:`sync_listings`) before it decides.
    state_sync_every_s : float
        How often the online state is synced to disk (:meth:`OnlineFeatureStore.sync`).
    clock : callable, optional
        The time now (UTC), whose local day picks the band cuts (:mod:`serving.band_refresh`).
    tolerance : timedelta
        How far an application may be dated before the newest one recorded, or after the
        clock: a backdated application would shift the running totals of every later one of
        its keys on the scoring thread, and backfills belong to ``duanka ingest``.

    Notes
    -----
    Durability: a decision's answer, and the prepared application it answered, are
    committed to ``log`` with an fsync before the answer is returned. The application's
    write to ``online`` is not fsynced one by one (that fsync was a third of the recording
    cost): about once a second the state is synced and ``log`` notes which answers it now
    holds for sure. After a power cut, :meth:`redo` records the later ones again (a
    killed process loses nothing either way: SQLite's log is in the page cache).

    Bands: each local day's cuts come from the scores this booster gave over the days before
    (:class:`serving.band_refresh.RecentScores`, read back from ``log`` at start and after a
    switch); each day's first decision audits the cuts in force (event ``band_cuts``).
    """

    def __init__(
        self,
        model: LoadedModel,
        online: OnlineFeatureStore,
        log: DecisionLog,
        keys: Pseudonymiser,
        watchlist: WatchlistSource | None = None,
        state_sync_every_s: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        tolerance: timedelta = DEFAULT_TOLERANCE,
    ) -> None:
        self.model = model
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tolerance = tolerance
        self._newest = online.newest_applied_at()
        self.online = online
        self.log = log
        self.keys = keys
        self.state_sync_every_s = state_sync_every_s
        self._synced_at = time.monotonic()
        self._last_answered: int | None = None  # position of the last stored response
        self._synced_unnoted: int | None = None  # synced in the state, not yet noted in the log
        self.watchlist: WatchlistSource = Watchlist.empty() if watchlist is None else watchlist
        self._fed: Watchlist | None = None
        self.sync_listings()
        self._recent = self._recent_scores(model)

    def _recent_scores(self, model: LoadedModel) -> RecentScores:
        return RecentScores.from_log(
            self.log, model.booster_sha256, model.registered.bundle.bands, now=self.clock()
        )

    def sync_listings(self) -> Watchlist:
        """The watchlist in force now, its listings fed to the online state if it changed.

        Whatever brought new listings (``POST /v1/watchlist``, or ``duanka ingest --watchlist``
        on the running service's store), the next application's features see them, as the
        rule does. Feeding is idempotent and costs one pass over the list, once per change.
        """
        current = self.watchlist.current()
        if current is not self._fed:
            self.online.add_listings(current.received())
            self._fed = current
        return current

    def switch(self, model: LoadedModel, *, trigger: str, key_id: str | None, request_id: str | None) -> bool:
        """Use ``model`` from the next request on; audited. False when it is already in use."""
        old = self.model

        def identity(m: LoadedModel) -> tuple[str, str, str]:
            return m.version, m.booster_sha256, m.registered.bundle_sha256

        if identity(old) == identity(model):
            return False
        self.model = model
        self._recent = self._recent_scores(model)
        self.log.event(
            "model_switched",
            {
                "trigger": trigger,
                "from_version": old.version,
                "from_booster_sha256": old.booster_sha256,
                "to_version": model.version,
                "to_booster_sha256": model.booster_sha256,
                "to_bundle_sha256": model.registered.bundle_sha256,
                "uri": model.registered.uri,
            },
            key_id=key_id,
            request_id=request_id,
        )
        return True

    def score(
        self,
        events: Sequence[dict],
        *,
        key_id: str,
        request_id: str,
        started: float | None = None,
        client_request_id: str | None = None,
    ) -> list[Scored]:
        """Score prepared events (from :func:`prepare_applications`), one answer per event.

        Events are taken in (applied_at, application_id) order, each seeing the
        ones before it, as a batch replay would. An application scored before
        gets its stored answer back (``replayed``) and changes nothing.

        Parameters
        ----------
        events : sequence of dict
            Prepared events; repeats of one application id get one answer.
        key_id : str
            The caller, for the audit trail.
        request_id : str
            The request, for the audit trail: the server's own id.
        started : float, optional
            ``time.perf_counter()`` when the request arrived, for the audited latency.
        client_request_id : str, optional
            The caller's ``X-Request-ID``, audited beside ``request_id``.

        Raises
        ------
        ConflictingResend
            An application id was scored before with other content; nothing is recorded.
        """
        started = time.perf_counter() if started is None else started
        # one model, and its cuts, for the whole request, even if a switch lands meanwhile
        model, recent = self.model, self._recent
        unique = {e["application_id"]: e for e in events}
        stored = {aid: self.log.stored(aid) for aid in unique}
        conflicts = [
            aid for aid, s in stored.items() if s is not None and s.row_digest != unique[aid]["row_digest"]
        ]
        # an id the state holds with other content but never decided came from the event store:
        # scored again, the state would keep the old row in silence
        conflicts += [aid for aid, s in stored.items() if s is None and self.online.holds_other(unique[aid])]
        if conflicts:
            raise ConflictingResend(conflicts)
        answers: dict[str, Scored] = {aid: Scored(s.response, True) for aid, s in stored.items() if s}
        self._refuse_out_of_time(events, answered=set(answers))
        fresh = sorted((e for aid, e in unique.items() if aid not in answers), key=_arrival)
        now = self.clock()
        if fresh:
            cuts, refreshed = recent.cuts_at(now)
            if refreshed is not None:
                self.log.event("band_cuts", refreshed, key_id=None, request_id=request_id)
            answers.update(self._decide(model, fresh, self.sync_listings(), cuts))
        latency = (time.perf_counter() - started) * 1000.0
        decided_at = utc_now()
        rows = [
            DecisionRow(
                request_id=request_id,
                application_id=aid,
                key_id=key_id,
                decided_at=decided_at,
                model_name=answer.response["model"]["name"],
                model_version=answer.response["model"]["version"],
                booster_sha256=answer.response["model"]["booster_sha256"],
                score=answer.response["score"],
                band=answer.response["band"],
                reason_codes="|".join(r["code"] for r in answer.response["reasons"]),
                latency_ms=latency,
                replayed=answer.replayed,
                rule=answer.response.get("rule") or "",
                client_request_id=client_request_id,
                bundle_sha256=answer.response["model"]["bundle_sha256"],
            )
            for aid, answer in answers.items()
        ]
        noted, self._synced_unnoted = self._synced_unnoted, None
        self._last_answered = self.log.record(
            rows,
            {e["application_id"]: (e["row_digest"], answers[e["application_id"]].response, e) for e in fresh},
            state_synced_through=noted,
        )
        recent.add(now, [answers[e["application_id"]].response["score"] for e in fresh])
        if fresh:
            latest = fresh[-1]["applied_at"]
            self._newest = latest if self._newest is None else max(self._newest, latest)
        if time.monotonic() - self._synced_at >= self.state_sync_every_s:
            self._sync_state()
        return [answers[e["application_id"]] for e in events]

    def _refuse_out_of_time(self, events: Sequence[dict], answered: set[str]) -> None:
        """Raise :class:`InvalidInput` naming each new application (by its item) dated too early or
        too late; ``answered`` ones are replays, answered whenever they were dated."""
        now, tolerance = self.clock(), self.tolerance
        minutes = f"{tolerance.total_seconds() / 60:g} minutes"
        errors = []
        for i, event in enumerate(events):
            if event["application_id"] in answered:
                continue
            at = event["applied_at"]
            if at > now + tolerance:
                errors.append(FieldError(i, "applied_at", f"more than {minutes} after the server's clock"))
            elif self._newest is not None and at < self._newest - tolerance:
                errors.append(
                    FieldError(
                        i,
                        "applied_at",
                        f"more than {minutes} before the newest application this service has recorded "
                        f"({self._newest.isoformat(timespec='seconds')}): the service scores openings as "
                        "they happen; backfills go through `duanka ingest`",
                    )
                )
        if errors:
            raise InvalidInput(errors)

    def _sync_state(self) -> None:
        """Sync the online state; the next record notes how far the answers are now safe in it."""
        answered = self._last_answered
        self.online.sync()
        self._synced_at = time.monotonic()
        self._synced_unnoted = answered

    def redo(self) -> int:
        """Record into the state the applications answered after it was last known synced.

        Returns
        -------
        int
            How many the state had lost (0 after a clean stop or a killed process).
        """
        return self.online.add_applications(self.log.unsynced_events())

    def close(self) -> None:
        """Sync the state and note it, so that the next start has nothing to redo."""
        answered = self._last_answered
        self.online.sync()
        if answered is not None:
            self.log.state_synced(answered)

    def _decide(
        self, model: LoadedModel, events: list[dict], watchlist: Watchlist, cuts: Bands
    ) -> dict[str, Scored]:
        X = np.empty((len(events), len(MODEL_FEATURES)))
        for i, event in enumerate(events):
            # features first: an application never counts towards its own
            X[i] = self.online.features_for(event)
            self.online.add_application(event)
        bundle = model.registered.bundle
        # One thread: for a handful of rows, waking LightGBM's OpenMP team costs milliseconds
        # (0.06 ms against 6 ms measured on 2 busy cores). Each row's value does not depend on
        # the thread count, so batch scoring still gives the same numbers to the last bit.
        scores = bundle.calibrator.predict(bundle.booster.predict(X, raw_score=True, num_threads=1))
        contributions = bundle.booster.predict(X, pred_contrib=True, num_threads=1)
        reasons = model.explainer.reasons_from_contributions(X, contributions)
        bands = cuts.assign(scores)
        out: dict[str, Scored] = {}
        for i, event in enumerate(events):
            band = str(bands[i])
            action = ACTIONS[band]
            zh, en = ACTION_TEXT[action]
            response = {
                "application_id": event["application_id"],
                "score": float(scores[i]),
                "band": band,
                "action": action,
                "action_zh": zh,
                "action_en": en,
                "reasons": [_reason(r) for r in reasons[i]],
                "rule": None,
                "model_band": band,
                "model": model.describe(),
                "features": {name: _number(v) for name, v in zip(MODEL_FEATURES, X[i], strict=True)},
            }
            listing = watchlist.listing(event["applicant_key"], event["applied_at"])
            if listing is not None:
                # the rule decides; the model's score and band stay, for monitoring only
                decided = refusal(listing)
                action, zh, en = refusal_action()
                response |= {
                    "band": BLOCKED,
                    "action": action,
                    "action_zh": zh,
                    "action_en": en,
                    "reasons": [decided.reason()],
                    "rule": decided.rule,
                }
            out[event["application_id"]] = Scored(response, False)
        return out

    def score_application(self, application: Mapping[str, object], *, key_id: str = "local") -> dict:
        """Validate, pseudonymise and score one raw application (contract fields by name).

        Raises
        ------
        InvalidInput, ConflictingResend
        """
        (event,) = prepare_applications([application], self.keys)
        (answer,) = self.score([event], key_id=key_id, request_id=f"local-{time.time_ns()}")
        return answer.response

    def listings_stored(self, counts: Mapping[str, int], *, key_id: str, request_id: str) -> None:
        """Audit a watchlist feed and take its listings into use (rule and features) from the next
        decision on."""
        self.log.event("watchlist_received", dict(counts), key_id=key_id, request_id=request_id)
        self.sync_listings()

    def add_labels(
        self,
        labels: Sequence[dict],
        *,
        key_id: str,
        request_id: str,
        branches: tuple[str, ...] | None = None,
    ) -> int:
        """Feed confirmations (from :func:`prepare_labels`) into the state; audited.

        Only of applications the state holds (its history window and everything scored since),
        and with a branch-scoped key (``branches``) only of those branches' applications:
        a confirmation of anything else would change no feature, or another branch's.

        Returns
        -------
        int
            Confirmations that changed the state (new, or earlier than the one held).

        Raises
        ------
        InvalidInput
            Some confirmation names an application the key may not confirm; nothing was
            recorded. One reason whether the id is unknown or another branch's.
        """
        held = self.online.branches_of([lab["application_id"] for lab in labels])
        where = "" if branches is None else " at the key's branches"
        refused = [
            FieldError(
                i,
                "application_id",
                f"no application with this id{where} is held by the service; confirmations of "
                "applications older than its history go through `duanka ingest --labels`",
            )
            for i, lab in enumerate(labels)
            if held.get(lab["application_id"]) is None
            or (branches is not None and held[lab["application_id"]] not in branches)
        ]
        if refused:
            raise InvalidInput(refused)
        changed = sum(
            self.online.add_label(lab["application_id"], lab["confirmed_at"], lab["source"]) for lab in labels
        )
        self.online.sync()  # acknowledged confirmations have no other record to be redone from
        self.log.event(
            "labels_received",
            {"received": len(labels), "changed": changed},
            key_id=key_id,
            request_id=request_id,
        )
        return changed


def _arrival(event: dict) -> tuple[datetime, str]:
    return event["applied_at"], event["application_id"]

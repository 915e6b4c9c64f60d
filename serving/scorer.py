"""Scoring applications one request at a time against the live state: the service's core, no HTTP.

Prepared applications (:mod:`duanka.serving.prepare`) get their features from the online
state as of their ``applied_at``, are recorded into that state, and are decided by
the one scoring path batch scoring uses too (:func:`duanka.serving.decision.decide`). The
response is stored by application id, so a retry gets the same answer and counts
once. An applicant on the joint-punishment list at ``applied_at`` is refused by
rule (:mod:`duanka.serving.rules`), whatever the score; the same list feeds the online
state's listing features, so the rule and the features always read one list.

Durability: the decision record is written (fsynced) before an answer leaves; the
online state is synced about once a second and the record notes how far, so a
restart redoes (:meth:`Scorer.redo`) only the applications answered after that. A
:class:`Scorer` and everything it holds is used from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from duanka.data.config import default_of
from duanka.data.ingest import CONFIRMED_BEFORE_APPLICATION
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.watchlist import Watchlist, WatchlistSource
from duanka.features.online import HeldApplication, OnlineFeatureStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog, DecisionRow, iso_utc, utc_now
from duanka.serving.band_refresh import RecentScores
from duanka.serving.decision import ModelDecisions, answer, decide
from duanka.serving.model_source import LoadedModel
from duanka.serving.prepare import FieldError, InvalidInput, prepare_applications
from duanka.serving.rules import refusal
from duanka.serving.time_bounds import after_the_clock, before_the_clock
from duanka.training.bands import Bands

DEFAULT_TOLERANCE = timedelta(seconds=default_of("backdating_tolerance_s"))
DEFAULT_FUTURE_TOLERANCE = timedelta(seconds=default_of("future_tolerance_s"))


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


def _response(
    model: LoadedModel, event: dict, x: np.ndarray, decided: ModelDecisions, row: int, watchlist: Watchlist
) -> dict:
    """The answer for one decided application, refused by rule if its applicant is listed."""
    listing = watchlist.listing(event["applicant_key"], event["applied_at"])
    return answer(
        model,
        event["application_id"],
        x,
        decided.scores[row],
        str(decided.bands[row]),
        decided.reasons[row],
        None if listing is None else refusal(listing),
    )


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
        store: :class:`duanka.data.watchlist.StoredWatchlist`); no listing when not given. Each
        new snapshot of it is fed to ``online`` (:meth:`sync_listings`) before it decides.
    state_sync_every_s : float
        How often the online state is synced to disk (:meth:`OnlineFeatureStore.sync`).
    clock : callable, optional
        The time now (UTC): it bounds the dates taken, and its local day picks the band cuts
        (:mod:`duanka.serving.band_refresh`).
    tolerance : timedelta
        How far before ``clock`` an application may be dated: a backdated application would
        shift the running totals of every later one of its keys on the scoring thread, and
        backfills belong to ``duanka ingest``.
    future_tolerance : timedelta
        How far after ``clock`` an application may be dated: a sending system's clock a little
        ahead, no more.

    Both bounds are the clock's alone, never the newest date recorded: any key could push that
    bound and make the service refuse every other branch's honest applications. An
    application arriving after later ones of its keys is recorded as it should be
    (:meth:`OnlineFeatureStore.add_application` shifts their running totals); the bounds keep
    that shift small.

    Notes
    -----
    Durability: a decision's answer, and the prepared application it answered, are
    committed to ``log`` with an fsync before the answer is returned. The application's
    write to ``online`` is neither fsynced nor, in the service, committed one by one (the
    fsync was a third of the recording cost, the commit another third): about once a second
    the state is synced and ``log`` notes which answers it now holds for sure. After a power
    cut or a killed process, :meth:`redo` records the later ones again.

    Bands: each local day's cuts come from the scores this booster gave over the days before
    (:class:`duanka.serving.band_refresh.RecentScores`, read back from ``log`` at start and after a
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
        future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    ) -> None:
        self.model = model
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tolerance = tolerance
        self.future_tolerance = future_tolerance
        self.online = online
        self.log = log
        self.keys = keys
        self.state_sync_every_s = state_sync_every_s
        self._synced_at = time.monotonic()
        self._last_answered: int | None = None  # position of the last stored response
        self._syncing: tuple[int, int | None] | None = None  # (sync_soon ticket, answered through)
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
        duanka.data.wal.SyncFailed
            A sync of the online state failed; nothing is decided.
        """
        started = time.perf_counter() if started is None else started
        # fail closed before deciding anything: a state whose fsync failed cannot vouch for itself
        self.online.check_synced()
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
            DecisionRow.of_response(
                aid,
                scored.response,
                request_id=request_id,
                key_id=key_id,
                decided_at=decided_at,
                latency_ms=latency,
                replayed=scored.replayed,
                client_request_id=client_request_id,
                # a replay's event is its application as sent again: the same content (a different
                # one is refused above), so the same branch and time
                branch_id=unique[aid]["branch_id"],
                applied_at=iso_utc(unique[aid]["applied_at"]),
            )
            for aid, scored in answers.items()
        ]
        noted = None  # how far the answers are surely in the state, once the sync asked is done
        if self._syncing is not None and self.online.synced(self._syncing[0]):
            noted, self._syncing = self._syncing[1], None
        self._last_answered = self.log.record(
            rows,
            {e["application_id"]: (e["row_digest"], answers[e["application_id"]].response, e) for e in fresh},
            state_synced_through=noted,
        )
        recent.add(now, [answers[e["application_id"]].response["score"] for e in fresh])
        if time.monotonic() - self._synced_at >= self.state_sync_every_s:
            self._sync_state()
        return [answers[e["application_id"]] for e in events]

    def _refuse_out_of_time(self, events: Sequence[dict], answered: set[str]) -> None:
        """Raise :class:`InvalidInput` naming each new application (by its item) dated before the
        clock less ``tolerance`` or after it plus ``future_tolerance``; ``answered`` ones are
        replays, answered whenever they were dated.

        The reason shows the server's clock and no other time: nothing another caller sent."""
        now = self.clock()
        errors = []
        for i, event in enumerate(events):
            if event["application_id"] in answered:
                continue
            at = event["applied_at"]
            reason = after_the_clock(at, now, self.future_tolerance) or before_the_clock(
                at, now, self.tolerance
            )
            if reason is not None:
                errors.append(FieldError(i, "applied_at", reason))
        if errors:
            raise InvalidInput(errors)

    def _sync_state(self) -> None:
        """Have the online state synced off this thread; the first record after its fsync notes how
        far the answers are then safe in it."""
        self._syncing = (self.online.sync_soon(), self._last_answered)
        self._synced_at = time.monotonic()

    def redo(self) -> int:
        """Record into the state the applications answered after it was last known synced.

        Returns
        -------
        int
            How many the state had lost (0 after a clean stop).
        """
        redone = self.online.add_applications(self.log.unsynced_events())
        if redone:
            self.online.sync()  # whole again, and on disk, before the service says it is ready
        return redone

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
        decided = decide(model, X, cuts, explain_all=True)
        return {
            event["application_id"]: Scored(
                _response(model, event, X[i], decided, i, watchlist), replayed=False
            )
            for i, event in enumerate(events)
        }

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
            Some confirmation names an application the key may not confirm, or is dated before
            its application or after the clock (:meth:`_confirmations_out_of_time`); nothing was
            recorded. One reason whether the id is unknown or another branch's.
        """
        held = self.online.held_applications([lab["application_id"] for lab in labels])
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
            or (branches is not None and held[lab["application_id"]].branch_id not in branches)
        ]
        refused += self._confirmations_out_of_time(labels, held, {e.item for e in refused})
        if refused:
            raise InvalidInput(sorted(refused, key=lambda e: e.item))
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

    def _confirmations_out_of_time(
        self, labels: Sequence[dict], held: Mapping[str, HeldApplication], refused: set[int]
    ) -> list[FieldError]:
        """The confirmations (by item, but the ``refused`` ones) dated before their application
        or more than ``future_tolerance`` after the clock: neither can be true, and either would
        mark the applicant's links as a mule's from a time they were not (year 1, year 9999)."""
        now = self.clock()
        errors = []
        for i, lab in enumerate(labels):
            if i in refused:
                continue
            at = lab["confirmed_at"]
            if at < held[lab["application_id"]].applied_at:
                errors.append(FieldError(i, "confirmed_at", CONFIRMED_BEFORE_APPLICATION))
            elif (reason := after_the_clock(at, now, self.future_tolerance)) is not None:
                errors.append(FieldError(i, "confirmed_at", reason))
        return errors


def _arrival(event: dict) -> tuple[datetime, str]:
    return event["applied_at"], event["application_id"]

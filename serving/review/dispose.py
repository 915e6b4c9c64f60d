"""Dispositions and page views, appended to the decision record on the scoring thread.

A confirmation is fed to the online state exactly as ``POST /v1/labels`` feeds one
(:meth:`duanka.serving.scorer.Scorer.add_labels`, ``source = review``, dated when the reviewer
confirmed), so the next application of that ring sees it. "Cleared" and "escalated" are kept as
reviewed outcomes only: never a label. Each disposition is its own chained ``case_disposed``
event with the reviewer's key id and note, never an update of an earlier row.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from duanka.data.review_labels import store_review_confirmations
from duanka.serving.lifecycle import Service
from duanka.serving.prepare import InvalidInput, prepare_labels
from duanka.serving.review.cases import DISPOSED, Case
from duanka.serving.review.sessions import Session
from duanka.serving.scorer import Scorer

NOTE_MAX = 2000
# A long run of digits (allowing spaces and dashes) is an ID card, phone or bank card number:
# a note is kept in the record and exported, where no raw identifier may go.
_IDENTIFIER_LIKE = re.compile(r"(?:\d[\s-]?){10,}\d|\d{17}[\dXx]")


class DispositionRefused(Exception):
    """A disposition (or form post) that is not recorded, with the status and reason to show."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def checked_note(note: str, what: str = "a disposition") -> str:
    """The reviewer's note on ``what``, refused when empty, too long, or holding something like an
    identifier."""
    note = note.strip()
    if not note:
        raise DispositionRefused(422, f"{what} needs a note saying why")
    if len(note) > NOTE_MAX:
        raise DispositionRefused(422, f"the note is {len(note)} characters; at most {NOTE_MAX}")
    if _IDENTIFIER_LIKE.search(note):
        raise DispositionRefused(
            422,
            "the note holds a long number (an ID card, phone or bank card number?): the record keeps "
            "no raw identifier; name the application id instead",
        )
    return note


async def views(
    svc: Service, session: Session, request_id: str, kind: str, detail: Mapping[str, object]
) -> None:
    """Append a sign-in, sign-out or page view to the decision record (who looked at what)."""
    await svc.scoring.run(
        lambda scorer: scorer.log.event(kind, detail, key_id=session.key.key_id, request_id=request_id)
    )


async def dispose(
    svc: Service, session: Session, request_id: str, case: Case, status: str, note: str, *, whole_ring: bool
) -> str:
    """Record ``status`` for the case (or every open case of its ring at the reviewer's branches).

    Returns
    -------
    str
        What was recorded, for the page to say.
    """
    note = checked_note(note)
    key = session.key
    targets = [case]
    if whole_ring:
        ring = await asyncio.to_thread(svc.review.cases.group_of, case, key.branches)
        targets += [c for c in ring[1:] if c.status == "open"]

    def on_scoring_thread(scorer: Scorer) -> tuple[datetime, list[str]]:
        at = scorer.clock().astimezone(UTC)
        labels = []
        for target in targets:
            label = (
                _fed(scorer, target, at.isoformat(), key.key_id, request_id, key.branches)
                if status == "confirmed"
                else None
            )
            scorer.log.event(
                DISPOSED,
                {
                    "application_id": target.application_id,
                    "branch_id": target.branch_id,
                    "status": status,
                    "note": note,
                    "label": label,
                    "ring_of": case.application_id if whole_ring else None,
                },
                key_id=key.key_id,
                request_id=request_id,
            )
            labels.append(label)
        return at, labels

    at, labels = await svc.scoring.run(on_scoring_thread)
    if status == "confirmed":
        confirmed = [(t.application_id, at) for t in targets]
        async with svc.store_lock:  # for every later `duanka train` and `duanka backtest`
            await asyncio.to_thread(store_review_confirmations, confirmed, svc.config.store, svc.config.keys)
    fed = labels.count("fed")
    said = f"{status}: {len(targets)} case{'s' if len(targets) > 1 else ''}"
    if status == "confirmed":
        said += f"; {fed} confirmation{'s' if fed != 1 else ''} fed to the live state"
        if fed < len(targets):
            said += f" ({len(targets) - fed} no longer held by the service: use `duanka ingest --labels`)"
    return said


def _fed(
    scorer: Scorer, case: Case, at: str, key_id: str, request_id: str, branches: tuple[str, ...] | None
) -> str:
    """Feed one confirmation as ``POST /v1/labels`` would; "fed", or why it could not be."""
    labels = prepare_labels([{"application_id": case.application_id, "confirmed_at": at, "source": "review"}])
    try:
        scorer.add_labels(labels, key_id=key_id, request_id=request_id, branches=branches)
    except InvalidInput:
        return "not held"
    return "fed"

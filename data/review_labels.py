"""Confirmations a case reviewer made, kept in the event store as labels (``source = review``).

The service feeds a confirmation to its online state at once (the next application of the ring
sees it); this keeps it where every later ``duanka train`` and ``duanka backtest`` reads labels,
dated when the reviewer confirmed, so a model learns from it only as of that moment. An
application the store already holds a label for keeps that label: its earlier confirmation (a
police notice, a freeze) is what training uses, and a conflicting second row would be refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pyarrow as pa

from duanka.data.contract import LABELS
from duanka.data.derived import row_digest
from duanka.data.events import LABEL_EVENTS
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore

REVIEW = "review"


@dataclass(frozen=True)
class StoredConfirmations:
    """How many confirmations were stored, and how many applications already held a label."""

    stored: int
    already_labelled: int


def store_review_confirmations(
    confirmations: Sequence[tuple[str, datetime]], store: EventStore, keys: Pseudonymiser
) -> StoredConfirmations:
    """Append ``(application_id, confirmed_at)`` pairs as review labels the store does not hold yet.

    ``confirmed_at`` is timezone-aware (the reviewer's disposition time).
    """
    labelled = set(store.labels(["application_id"])["application_id"].to_pylist())
    distinct = dict(confirmations)
    fresh = [(a, at) for a, at in distinct.items() if a not in labelled]
    rows = pd.DataFrame(
        [
            {
                "application_id": a,
                "confirmed_at": at,
                "source": REVIEW,
                "row_digest": row_digest(
                    {"application_id": a, "confirmed_at": at, "source": REVIEW}, LABELS, keys
                ),
            }
            for a, at in fresh
        ],
        columns=LABEL_EVENTS.names,
    )
    rows["confirmed_at"] = pd.to_datetime(rows["confirmed_at"], utc=True)
    store.append(
        LABELS.name, pa.Table.from_pandas(rows, schema=LABEL_EVENTS, preserve_index=False), key_id=keys.key_id
    )
    return StoredConfirmations(len(fresh), len(distinct) - len(fresh))

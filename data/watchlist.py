"""The joint-punishment list (断卡联合惩戒名单): listings stored as pseudonyms, and who is listed when.

Listings arrive as the contract's ``watchlist`` table (``duanka ingest --watchlist FILE``
or ``POST /v1/watchlist``). Each row is validated like any contract row (a bad row goes
to the quarantine with its row, column and reason), its ``id_number`` becomes the keyed
pseudonym of the applicants' family, so it equals the ``applicant_key`` of that person's
applications, and the raw number is dropped.

Rules, in one place:

- **Point in time.** A listing applies to an application iff
  ``listed_at <= applied_at < expires_at``: from the instant it is listed, and no longer
  at the instant it expires.
- **Default length.** A row without ``expires_at`` lasts :data:`DEFAULT_YEARS` calendar
  years from ``listed_at`` on the Asia/Shanghai calendar (29 February ends on 28 February).
- **Ending a listing.** Send the same person, source and ``listed_at`` again with an
  earlier ``expires_at``: a removal list is a watchlist file of such rows. For one
  (person, source, ``listed_at``) the earliest ``expires_at`` received wins; nothing
  is deleted, so the store keeps what was received. ``expires_at`` equal to
  ``listed_at`` withdraws a listing altogether; earlier than ``listed_at`` is quarantined.
- **Idempotent.** A row whose keyed digest is stored already changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from duanka.data.config import SHANGHAI
from duanka.data.contract import WATCHLIST
from duanka.data.derived import PSEUDONYMS, row_digests
from duanka.data.events import WATCHLIST_EVENTS
from duanka.data.ingest_report import IngestReport
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import CHUNK_ROWS, Encoding, iter_raw
from duanka.data.store import EventStore
from duanka.data.validate import validate

DEFAULT_YEARS = 5
RULE = "watchlist"  # how decisions, audit rows and reports name the rule this list feeds
_, APPLICANT_FAMILY = PSEUDONYMS["id_number"]  # a listed person's key is their applications' applicant_key
EXPIRES_BEFORE_LISTED = "expires before it is listed (expires_at is earlier than listed_at)"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def default_expiry(listed_at: pd.Series) -> pd.Series:
    """``listed_at`` plus :data:`DEFAULT_YEARS` calendar years on the Asia/Shanghai calendar, in UTC."""
    local = listed_at.dt.tz_convert(SHANGHAI) + pd.DateOffset(years=DEFAULT_YEARS)
    return local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def expiry_problems(valid: pd.DataFrame) -> pd.Series:
    """Rows of a validated watchlist whose ``expires_at`` is before their ``listed_at``."""
    return (valid["expires_at"].notna() & (valid["expires_at"] < valid["listed_at"])).astype(bool)


def listing_events(valid: pd.DataFrame, keys: Pseudonymiser) -> pd.DataFrame:
    """Validated watchlist rows as :data:`duanka.data.events.WATCHLIST_EVENTS` rows; the raw ID is dropped.

    Parameters
    ----------
    valid : pandas.DataFrame
        Rows that passed :func:`duanka.data.validate.validate` against :data:`duanka.data.contract.WATCHLIST`
        (and :func:`expiry_problems`).
    keys : Pseudonymiser
        The store's key: the same key and family as the applications' ``applicant_key``.

    Returns
    -------
    pandas.DataFrame
        ``applicant_key``, ``listed_at``, ``expires_at`` (the default where empty),
        ``source``, ``row_digest`` and ``key_id``, with ``valid``'s index.
    """
    expires = valid["expires_at"].astype("datetime64[us, UTC]")
    return pd.DataFrame(
        {
            "applicant_key": keys.tokens(APPLICANT_FAMILY, valid["id_number"]),
            "listed_at": valid["listed_at"].astype("datetime64[us, UTC]"),
            "expires_at": expires.fillna(default_expiry(valid["listed_at"])),
            "source": valid["source"],
            "row_digest": row_digests(valid, WATCHLIST, keys),
            "key_id": keys.key_id,
        },
        index=valid.index,
    )


@dataclass(frozen=True)
class Appended:
    """What :func:`append_listings` did."""

    stored: int
    already_stored: int
    duplicates: int
    part: Path | None


def append_listings(events: pd.DataFrame, store: EventStore, key_id: str) -> Appended:
    """Store the listings the store does not hold yet (by row digest); repeats in ``events`` once.

    Notes
    -----
    The stored digests are read before the store's write lock is taken: two writers sending
    the same rows at the same moment may both store them. A repeat changes no decision
    (the earliest expiry of one listing wins), so this is a count, not a correctness, matter.
    """
    known = set(store.watchlist(["row_digest"])["row_digest"].to_pylist())
    repeated = events["row_digest"].duplicated()
    already = events["row_digest"].isin(known) & ~repeated
    fresh = events.loc[~repeated & ~already]
    rows = pa.Table.from_pandas(
        fresh.loc[:, WATCHLIST_EVENTS.names].reset_index(drop=True),
        schema=WATCHLIST_EVENTS,
        preserve_index=False,
    )
    part = store.append(WATCHLIST.name, rows, key_id=key_id)
    return Appended(rows.num_rows, int(already.sum()), int(repeated.sum()), part)


def ingest_watchlist(
    path: Path,
    store: EventStore,
    keys: Pseudonymiser,
    *,
    chunk_rows: int = CHUNK_ROWS,
    encoding: Encoding = Encoding.UTF8,
) -> IngestReport:
    """Validate, pseudonymise and store a watchlist (or removal list) file; quarantine what breaks it.

    Returns
    -------
    IngestReport
        ``duplicates_in_file`` counts rows identical to an earlier row of the file.
    """
    store.check_key(keys.key_id)
    report = IngestReport(table=WATCHLIST.name, source=Path(path).name)
    for raw in iter_raw(path, WATCHLIST, chunk_rows, encoding):
        report.extra_columns = raw.extra_columns
        report.rows_read += raw.rows_read
        checked = validate(raw, WATCHLIST)
        early = expiry_problems(checked.valid)
        late = checked.valid.loc[early]
        rejections = pd.concat(
            [
                checked.rejections,
                pd.DataFrame(
                    {
                        "row": late["row"],
                        "application_id": None,
                        "column": "expires_at",
                        "reason": EXPIRES_BEFORE_LISTED,
                    }
                ),
            ],
            ignore_index=True,
        ).assign(source=raw.source)
        report.quarantined_rows += int(rejections["row"].nunique()) if len(rejections) else 0
        report.quarantine_lines_new += store.quarantine(rejections)
        appended = append_listings(listing_events(checked.valid.loc[~early], keys), store, keys.key_id)
        report.stored += appended.stored
        report.already_stored += appended.already_stored
        report.duplicates_in_file += appended.duplicates
        if appended.part is not None:
            report.parts.append(appended.part)
    return report


LISTING_KEY = ["applicant_key", "source", "listed_at"]  # one listing; repeats and removals share it


def received_listings(events: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """One row per listing (person, source, ``listed_at``) with the earliest ``expires_at`` received.

    Removals are applied (the earliest expiry wins); withdrawn listings (``expires_at`` equal to
    ``listed_at``) are kept, so that whoever was fed the listing before learns it was withdrawn.

    Parameters
    ----------
    events : pyarrow.Table or pandas.DataFrame
        :data:`duanka.data.events.WATCHLIST_EVENTS` rows as stored (repeats and removals included).

    Returns
    -------
    pandas.DataFrame
        ``applicant_key``, ``source``, ``listed_at``, ``expires_at``.
    """
    frame = events.to_pandas() if isinstance(events, pa.Table) else events
    frame = frame.loc[:, ["applicant_key", "source", "listed_at", "expires_at"]]
    return frame.groupby(LISTING_KEY, as_index=False, sort=False)["expires_at"].min()


def effective_listings(events: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The listings that apply at some instant: :func:`received_listings` less the withdrawn ones."""
    received = received_listings(events)
    return received.loc[received["expires_at"] > received["listed_at"]].reset_index(drop=True)


def micros(at: datetime) -> int:
    """An aware instant as whole microseconds since 1970 (exact: no float rounding at a boundary)."""
    return (at - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class Listing:
    """The listing that applies to one application."""

    source: str
    listed_at: pd.Timestamp
    expires_at: pd.Timestamp


class Watchlist:
    """The listings in force, by applicant key: an immutable snapshot.

    Parameters
    ----------
    events : pyarrow.Table or pandas.DataFrame
        :data:`duanka.data.events.WATCHLIST_EVENTS` rows as stored (repeats and removals included).
    """

    def __init__(self, events: pa.Table | pd.DataFrame) -> None:
        # the earliest expiry received for one (person, source, listed_at) wins: removals end listings
        self._received = received_listings(events)
        effective = self._received.loc[self._received["expires_at"] > self._received["listed_at"]]
        self._frame = effective.sort_values(
            ["applicant_key", "listed_at", "source"], kind="stable"
        ).reset_index(drop=True)

    @classmethod
    def empty(cls) -> Watchlist:
        return cls(WATCHLIST_EVENTS.empty_table())

    @classmethod
    def from_store(cls, store: EventStore) -> Watchlist:
        return cls(store.watchlist(["applicant_key", "source", "listed_at", "expires_at"]))

    def __len__(self) -> int:
        """Listings that apply at some instant (withdrawn ones excluded)."""
        return len(self._frame)

    def current(self) -> Watchlist:
        """This snapshot (a fixed list is its own source, see :class:`WatchlistSource`)."""
        return self

    def received(self) -> pd.DataFrame:
        """Every listing received, withdrawn ones included (:func:`received_listings`).

        What the online feature state is fed (:meth:`duanka.features.online.OnlineFeatureStore.add_listings`):
        a withdrawal must reach a state that was given the listing before.
        """
        return self._received

    @cached_property
    def _by_key(self) -> dict[str, list[tuple[int, int, str]]]:
        frame = self._frame
        listed, expires = _as_micros(frame["listed_at"]), _as_micros(frame["expires_at"])
        index: dict[str, list[tuple[int, int, str]]] = {}
        for key, start, stop, source in zip(
            frame["applicant_key"].tolist(),
            listed.tolist(),
            expires.tolist(),
            frame["source"].tolist(),
            strict=True,
        ):
            index.setdefault(key, []).append((start, stop, source))
        return index

    def listing(self, applicant_key: str, at: datetime) -> Listing | None:
        """The listing in force for ``applicant_key`` at ``at``, or None.

        When several apply, the earliest listed (then the first source by name) is named.
        """
        found = self._by_key.get(applicant_key)
        if not found:
            return None
        instant = micros(at)
        for start, stop, source in found:
            if start <= instant < stop:
                return Listing(source, _timestamp(start), _timestamp(stop))
        return None

    def listings_for(self, applicant_key: pd.Series, applied_at: pd.Series) -> pd.DataFrame:
        """The listing in force for each application, as :meth:`listing` chooses it.

        Parameters
        ----------
        applicant_key, applied_at : pandas.Series
            One entry per application, aligned; ``applied_at`` tz-aware.

        Returns
        -------
        pandas.DataFrame
            ``source`` (None where not listed), ``listed_at`` and ``expires_at`` (NaT where
            not listed), with the index of ``applicant_key``.
        """
        columns = ["source", "listed_at", "expires_at"]
        if self._frame.empty or applicant_key.empty:
            found = self._frame.loc[[], columns]
        else:
            apps = pd.DataFrame(
                {
                    "applicant_key": applicant_key.to_numpy(dtype=object),
                    "at": _as_micros(applied_at),
                    "position": np.arange(len(applicant_key)),
                }
            )
            listings = self._frame.assign(
                start=_as_micros(self._frame["listed_at"]), stop=_as_micros(self._frame["expires_at"])
            )
            matched = apps.merge(listings, on="applicant_key", how="inner")
            live = matched.loc[(matched["start"] <= matched["at"]) & (matched["at"] < matched["stop"])]
            first = live.sort_values(["position", "listed_at", "source"], kind="stable")
            found = first.drop_duplicates("position").set_index("position").loc[:, columns]
        out = found.reindex(pd.RangeIndex(len(applicant_key)))
        out.index = applicant_key.index
        out["source"] = out["source"].astype(object).where(out["source"].notna(), None)
        for name in ("listed_at", "expires_at"):
            out[name] = out[name].astype("datetime64[us, UTC]")
        return out


def _as_micros(instants: pd.Series) -> np.ndarray:
    """Aware instants (datetime64 or Timestamp objects) as whole microseconds since 1970."""
    return pd.to_datetime(instants, utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _timestamp(us: int) -> pd.Timestamp:
    return pd.Timestamp(us, unit="us", tz="UTC")


class WatchlistSource(Protocol):
    """Anything that gives the watchlist in force now: a :class:`Watchlist`, a :class:`StoredWatchlist`."""

    def current(self) -> Watchlist: ...


class StoredWatchlist:
    """The event store's watchlist, read again whenever the store holds more listings.

    The store's manifest counts the stored listings, so one small JSON read per call
    tells whether ``duanka ingest --watchlist`` or the service added any since.

    Parameters
    ----------
    store : EventStore
        The event store the listings are appended to.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._count: int | None = None
        self._watchlist = Watchlist.empty()

    def current(self) -> Watchlist:
        """The listings stored now."""
        count = int(self.store.manifest().get("rows", {}).get(WATCHLIST.name, 0))
        if count != self._count:
            self._watchlist = Watchlist.from_store(self.store)
            self._count = count
        return self._watchlist

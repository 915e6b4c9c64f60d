"""Seeded pseudonymised event tables with dense linkage, for feature tests and benches.

The tables follow :data:`duanka.data.events.APPLICATION_EVENTS`,
:data:`duanka.data.events.LABEL_EVENTS` and :data:`duanka.data.events.WATCHLIST_EVENTS`. They
are built to exercise point-in-time logic, not to look like a real bank: many
applications share escorts, intermediaries, lodging addresses, phones, number
blocks, devices and staff; some share a timestamp exactly; some sit exactly 1,
7, 30, 90 or 365 days after an earlier application with the same keys;
confirmations land before, at and after other applications' timestamps, some
exactly at their own; listings start before, at and after their people's
applications and exactly at other applications' instants, and end (or are
removed, or withdrawn) before, during and exactly at later applications.

Also the small helpers several test modules share: hand-made events, the chain key of
test records, a free loopback port.
"""

from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from duanka.data.events import ADDRESS_KINDS, APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
EXACT_GAPS_DAYS = (1, 7, 30, 90, 365)
PROVINCES = ("11", "31", "32", "33", "44", "51", "41", "42")
LISTING_YEARS_DAYS = 5 * 365 + 1  # the default listing length, near enough for test data
LIST_SOURCES = np.asarray(["pboc_joint_punishment", "bank_internal"])
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

COUNTIES = np.asarray(["0102", "0121", "0183"])  # the last four digits of a home county


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: a cheap, well-spread bijection on uint64."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hex_keys(ids: np.ndarray, family: int) -> pa.Array:
    """32-hex-character pseudonyms of integer ids, like :mod:`duanka.data.pseudonym` makes.

    Negative ids are missing values.
    """
    ids = np.asarray(ids, dtype=np.int64)
    with np.errstate(over="ignore"):
        salted = ids.astype(np.uint64) ^ _mix(np.full(ids.shape, family, dtype=np.uint64))
        h1 = _mix(salted)
        h2 = _mix(h1)
    raw = np.stack([h1, h2], axis=1).view(np.uint8).reshape(len(ids), 16)
    chars = np.empty((len(ids), 32), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    binary = pa.array(chars.view("S32").ravel(), type=pa.binary(), mask=ids < 0)
    return binary.cast(pa.string())


@dataclass(frozen=True)
class Events:
    applications: pa.Table
    labels: pa.Table
    listings: pa.Table  # the joint-punishment list as stored: repeats and removals included


@dataclass(frozen=True)
class EventFactory:
    """Pseudonymised application and label events with dense linkage.

    Parameters
    ----------
    n : int
        Applications to make.
    seed : int
        Everything drawn derives from it.
    days : int
        Calendar span of the applications.
    ring_share : float
        Share of applications made by mule rings (shared escort, lodging
        address, device, number block, often one staff member).
    label_rate : float
        Confirmation rate outside rings; ring members are confirmed far more often.
    start : str
        First day (UTC).
    first_id : int
        Application ids (and row digests) are made from ``first_id`` on, so factories
        for consecutive periods can make one bank with unique ids; people, escorts
        and the other keys come from the same id space in every factory, so they recur.
    """

    n: int = 2_000
    seed: int = 0
    days: int = 400
    ring_share: float = 0.2
    label_rate: float = 0.02
    start: str = "2024-01-01"
    first_id: int = 0

    def build(self) -> Events:
        rng = np.random.default_rng(self.seed)
        n = self.n
        start_us = pd.Timestamp(self.start, tz="UTC").value // 1_000
        ts = start_us + np.sort(rng.integers(0, self.days * 86_400, n)) * SECOND_US
        # A tenth carry sub-second parts, so microsecond boundaries matter.
        ts = ts + np.where(rng.random(n) < 0.1, rng.integers(0, SECOND_US, n), 0)

        n_branches = max(4, min(200, n // 400))
        branch = rng.integers(0, n_branches, n)
        applicant = rng.integers(0, max(1, int(n * 0.8)), n)
        # Own attributes of each applicant, so repeat applicants look the same.
        phone = applicant.copy()
        address = applicant // 3
        device = np.where(rng.random(n) < 0.9, applicant, rng.integers(0, max(1, n // 50), n))
        escort = np.where(rng.random(n) < 0.15, rng.integers(0, max(1, n // 4), n), -1)
        intermediary = np.where(rng.random(n) < 0.08, rng.zipf(1.6, n) % max(1, n // 100), -1)
        staff = branch * 8 + rng.integers(0, 8, n)
        corporate = rng.random(n) < 0.12
        company = np.where(corporate, rng.integers(0, max(1, n // 10), n), -1)
        company_age = rng.integers(30, 5_000, n)
        tampered = rng.random(n) < 0.02
        bundle_p = np.full(n, 0.45)
        tenure = rng.integers(0, 3_000, n)
        age = rng.integers(18, 80, n)
        home_province = rng.integers(0, len(PROVINCES), n)
        kind = rng.choice(len(ADDRESS_KINDS), n, p=[0.05, 0.1, 0.6, 0.15, 0.05, 0.05])

        # Hubs: a university escort and its dormitory, a labour agency.
        hub = rng.random(n) < 0.03
        escort[hub] = n  # an id no ordinary escort has
        address[hub] = n
        kind[hub] = ADDRESS_KINDS.index("dormitory")
        branch[hub] = 0
        age[hub] = rng.integers(18, 23, int(hub.sum()))
        agency = (~hub) & (rng.random(n) < 0.02)
        intermediary[agency] = n

        # Rings: bursts of a few days, sharing escort, lodging, device, number block, staff.
        ring = np.full(n, -1)
        is_ring = rng.random(n) < self.ring_share
        n_rings = max(1, int(is_ring.sum()) // 8)
        ring[is_ring] = rng.integers(0, n_rings, int(is_ring.sum()))
        ring_day = rng.integers(0, self.days, n_rings) * DAY_US + start_us
        ring_branch = rng.integers(0, n_branches, n_rings)
        r = ring[is_ring]
        ts[is_ring] = ring_day[r] + rng.integers(0, 6 * 86_400, r.size) * SECOND_US
        branch[is_ring] = ring_branch[r]
        staff[is_ring] = ring_branch[r] * 8 + r % 2
        escort[is_ring] = np.where(rng.random(r.size) < 0.8, n + 1 + r, escort[is_ring])
        intermediary[is_ring] = np.where(rng.random(r.size) < 0.5, n + 1 + r % 50, -1)
        address[is_ring] = np.where(rng.random(r.size) < 0.7, n + 1 + r, address[is_ring])
        kind[is_ring] = np.where(rng.random(r.size) < 0.8, ADDRESS_KINDS.index("lodging"), kind[is_ring])
        device[is_ring] = np.where(rng.random(r.size) < 0.5, n + 1 + r, device[is_ring])
        phone[is_ring] = np.where(rng.random(r.size) < 0.2, n + 1 + r, phone[is_ring])
        company[is_ring] = np.where(corporate[is_ring], n + 1 + r, -1)
        company_age[is_ring] = rng.integers(0, 120, r.size)
        tampered[is_ring] = rng.random(r.size) < 0.25
        bundle_p[is_ring] = 0.85
        tenure[is_ring] = rng.integers(0, 60, r.size)
        home_province[is_ring] = len(PROVINCES) - 1
        age[is_ring] = np.where(rng.random(r.size) < 0.7, rng.integers(18, 24, r.size), 66)

        # Exact-gap copies: same keys, exactly 1/7/30/90/365 days after an earlier row.
        copy = np.flatnonzero(rng.random(n) < 0.04)
        copy = copy[copy > 0]
        source = rng.integers(0, copy, copy.size) if copy.size else copy
        gap = rng.choice(EXACT_GAPS_DAYS, copy.size) * DAY_US
        for column in (applicant, phone, address, device, escort, intermediary, branch, staff):
            column[copy] = column[source]
        ts[copy] = ts[source] + gap
        # Ties: some rows take an earlier row's exact timestamp and keys.
        tie = np.flatnonzero(rng.random(n) < 0.04)
        tie = tie[tie > 0]
        tie_source = tie - 1
        ts[tie] = ts[tie_source]
        for column in (escort, address, intermediary, branch, staff):
            column[tie] = column[tie_source]

        channel = rng.choice(3, n, p=[0.6, 0.3, 0.1])
        channel[corporate] = 0
        mobile = channel == 1
        staff = np.where(mobile, -1, staff)
        device = np.where(mobile | (rng.random(n) < 0.05), device, -1)
        onsite = rng.choice(3, n, p=[0.7, 0.2, 0.1])  # true, false, unknown
        corporate_tenure_null = rng.random(n) < 0.05

        phone_number = 13_800_000_000 + phone * 37 % 90_000_000
        block = phone_number // 10_000
        branch_province = np.asarray(PROVINCES)[branch % len(PROVINCES)]
        home = np.asarray(PROVINCES)[home_province]
        ids = hex_keys(np.arange(self.first_id, self.first_id + n), 1)  # random order against time
        applications = pa.table(
            {
                "application_id": ids,
                "applied_at": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "branch_id": pa.array(np.asarray([f"B{b:04d}" for b in range(n_branches)])[branch]),
                "branch_region": pa.array(np.char.add(branch_province, "0100")),
                "branch_province": pa.array(branch_province),
                "branch_city": pa.array(np.char.add(branch_province, "01")),
                "channel": pa.array(np.asarray(["counter", "mobile", "agent"])[channel]),
                "account_type": pa.array(np.where(corporate, "corporate", "personal")),
                "staff_id": pa.array(
                    np.asarray([f"S{s:05d}" for s in range(n_branches * 8)])[staff],
                    pa.string(),
                    mask=staff < 0,
                ),
                "applicant_key": hex_keys(applicant, 2),
                "age": pa.array(age, pa.int16()),
                "gender": pa.array(np.where(applicant % 2 == 0, "F", "M")),
                # three counties a province, by applicant: fellow villagers share one
                "home_region": pa.array(np.char.add(home, COUNTIES[applicant % 3])),
                "home_province": pa.array(home),
                "phone_key": hex_keys(phone, 3),
                "phone_prefix": pa.array((phone_number // 100_000_000).astype(str)),
                "phone_block_key": hex_keys(block, 4),
                "phone_tenure_days": pa.array(tenure, pa.int32(), mask=rng.random(n) < 0.05),
                "address_key": hex_keys(address, 5),
                "address_kind": pa.array(np.asarray(ADDRESS_KINDS)[kind]),
                # an address names no province, the applicant's home one or the branch's
                "address_province": pa.array(
                    np.where(address % 4 == 0, None, np.where(address % 4 == 1, home, branch_province)),
                    pa.string(),
                ),
                "device_key": hex_keys(device, 6),
                "escort_key": hex_keys(escort, 7),
                "intermediary_key": hex_keys(intermediary, 8),
                "photo_tampered": pa.array(tampered),
                "onsite_verified": pa.array(onsite == 0, mask=~corporate | (onsite == 2)),
                "company_key": hex_keys(company, 9),
                "company_region": pa.array(np.where(corporate, "440104", None).astype(object), pa.string()),
                "company_age_days": pa.array(
                    company_age, pa.int32(), mask=~corporate | corporate_tenure_null
                ),
                "u_shield": pa.array(rng.random(n) < bundle_p),
                "mobile_banking": pa.array(rng.random(n) < bundle_p),
                "payment_binding": pa.array(rng.random(n) < bundle_p),
                "row_digest": hex_keys(np.arange(self.first_id, self.first_id + n), 10),
                "key_id": pa.array(np.full(n, "test-key")),
            },
            schema=APPLICATION_EVENTS,
        )
        order = np.argsort(ts, kind="stable")
        applications = applications.take(order)
        labels = self._labels(rng, applications, is_ring[order])
        return Events(applications, labels, self._listings(applications, is_ring[order]))

    def _labels(self, rng: np.random.Generator, apps: pa.Table, ring: np.ndarray) -> pa.Table:
        n = apps.num_rows
        ts = apps["applied_at"].cast(pa.int64()).to_numpy()
        chosen = np.flatnonzero(rng.random(n) < np.where(ring, 0.5, self.label_rate))
        delay = (rng.lognormal(np.log(60), 0.9, chosen.size) * DAY_US).astype(np.int64)
        confirmed = ts[chosen] + delay // SECOND_US * SECOND_US
        # Some confirmations land exactly on another application's timestamp, some on their own.
        on_other = rng.random(chosen.size) < 0.15
        confirmed[on_other] = np.maximum(ts[rng.integers(0, n, int(on_other.sum()))], ts[chosen][on_other])
        own = rng.random(chosen.size) < 0.03
        confirmed[own] = ts[chosen][own]
        # A few are confirmed twice; the earlier confirmation is the one that counts.
        again = chosen[rng.random(chosen.size) < 0.05]
        again_at = ts[again] + 400 * DAY_US
        ids = apps["application_id"].to_numpy(zero_copy_only=False)
        sources = np.asarray(["police_notice", "account_freeze", "investigation"])
        m = chosen.size + again.size
        return pa.table(
            {
                "application_id": pa.array(np.concatenate([ids[chosen], ids[again]])),
                "confirmed_at": pa.array(np.concatenate([confirmed, again_at]), pa.timestamp("us", tz="UTC")),
                "source": pa.array(sources[rng.integers(0, 3, m)]),
                "row_digest": hex_keys(np.arange(m) + 2 * self.first_id, 11),  # m < 2n: disjoint
            },
            schema=LABEL_EVENTS,
        )

    def _listings(self, apps: pa.Table, ring: np.ndarray) -> pa.Table:
        """Listings of ring members (often) and others (rarely), with every boundary the rules have.

        Drawn from a generator of its own, so applications and labels are what they were
        before listings existed.
        """
        rng = np.random.default_rng([self.seed, 0x5157])
        ts = apps["applied_at"].cast(pa.int64()).to_numpy()
        people = apps["applicant_key"].to_numpy(zero_copy_only=False)
        nearby = _next_at_same(apps["address_key"].to_numpy(zero_copy_only=False), ts)
        own: dict[str, list[int]] = {}
        for person, at in zip(people, ts, strict=True):
            own.setdefault(person, []).append(int(at))
        start_us = pd.Timestamp(self.start, tz="UTC").value // 1_000
        rows: list[tuple[str, int, int, str]] = []
        for i in np.flatnonzero(rng.random(len(ts)) < np.where(ring, 0.3, 0.03)):
            listed = _listed_at(rng, int(ts[i]), int(nearby[i]), start_us)
            # ts is in time order: the next 50 applications after the listing, found by bisection.
            after = int(np.searchsorted(ts, listed, side="right"))
            later = [at for at in own[people[i]] if at > listed] or [int(t) for t in ts[after : after + 50]]
            expires = _expires_at(rng, listed, later)
            row = (people[i], listed, expires, str(rng.choice(LIST_SOURCES)))
            rows.append(row)
            if expires > listed and rng.random() < 0.1:  # a removal: the same listing ends earlier
                rows.append((row[0], listed, listed + int((expires - listed) * rng.random()), row[3]))
            if rng.random() < 0.05:  # received twice
                rows.append(row)
        # People who never applied are listed too.
        for person in hex_keys(np.arange(len(ts), len(ts) + 5), 2).to_pylist():
            rows.append((person, start_us, start_us + LISTING_YEARS_DAYS * DAY_US, str(LIST_SOURCES[0])))
        keys, listed_at, expires_at, sources = (list(c) for c in zip(*rows, strict=True))
        stamp = pa.timestamp("us", tz="UTC")
        return pa.table(
            {
                "applicant_key": pa.array(keys, pa.string()),
                "listed_at": pa.array(listed_at, stamp),
                "expires_at": pa.array(expires_at, stamp),
                "source": pa.array(sources, pa.string()),
                "row_digest": hex_keys(np.arange(len(rows)), 12),
                "key_id": pa.array(np.full(len(rows), "test-key")),
            },
            schema=WATCHLIST_EVENTS,
        )


def _next_at_same(keys: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Per row, the row of the next application with the same key (-1 for none)."""
    frame = pd.DataFrame({"key": keys, "ts": ts, "row": np.arange(len(ts))})
    frame = frame.sort_values(["key", "ts", "row"], kind="stable")
    following = frame.groupby("key", sort=False)["row"].shift(-1).fillna(-1).astype(np.int64)
    out = np.full(len(ts), -1, dtype=np.int64)
    out[frame["row"].to_numpy()] = following.to_numpy()
    return out


def _listed_at(rng: np.random.Generator, applied: int, nearby: int, start_us: int) -> int:
    """Before, at or after the person's application, at a neighbour's instant, or years earlier."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return applied - int(rng.integers(1, 200)) * DAY_US - int(rng.integers(0, SECOND_US))
    if kind == 1:
        return applied + int(rng.integers(1, 120)) * DAY_US
    if kind == 2:
        return applied  # listed at the very instant of the application
    if kind == 3 and nearby >= 0:
        return nearby  # at the instant of the next application at the same building
    return start_us - int(rng.integers(0, 6 * 365)) * DAY_US


def _expires_at(rng: np.random.Generator, listed: int, later: list[int]) -> int:
    """The default length, a short one, exactly at a later application, or withdrawn."""
    kind = rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])
    if kind == 0:
        return listed + LISTING_YEARS_DAYS * DAY_US
    if kind == 1:
        return listed + int(rng.integers(1, 150)) * DAY_US
    if kind == 2 and later:
        return int(rng.choice(later))
    return listed  # withdrawn: it never applied


# keys the decision record's hash chain in tests (serving.chain)
CHAIN_KEY = b"test-chain-key-0123456789abcdef"

_DEFAULTS: dict[str, object] = {
    "branch_id": "B0001",
    "branch_region": "440100",
    "branch_province": "44",
    "branch_city": "4401",
    "channel": "counter",
    "account_type": "personal",
    "staff_id": "S00001",
    "age": 30,
    "gender": "F",
    "home_region": "440102",
    "home_province": "44",
    "phone_prefix": "138",
    "phone_tenure_days": 1_000,
    "address_kind": "residential",
    "address_province": "44",
    "device_key": None,
    "escort_key": None,
    "intermediary_key": None,
    "photo_tampered": False,
    "onsite_verified": None,
    "company_key": None,
    "company_region": None,
    "company_age_days": None,
    "u_shield": False,
    "mobile_banking": False,
    "payment_binding": False,
    "key_id": "test-key",
}


def application(application_id: str, applied_at: object, **fields: object) -> dict[str, object]:
    """One hand-made application event; keys default to ones of its own.

    ``applied_at`` is anything :class:`pandas.Timestamp` reads; naive means UTC.
    """
    at = pd.Timestamp(applied_at)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    event = {
        **_DEFAULTS,
        "application_id": application_id,
        "applied_at": at.to_pydatetime(),
        "applicant_key": f"person-{application_id}",
        "phone_key": f"phone-{application_id}",
        "phone_block_key": f"block-{application_id}",
        "address_key": f"address-{application_id}",
        "row_digest": f"digest-{application_id}",
    }
    unknown = set(fields) - set(APPLICATION_EVENTS.names)
    if unknown:
        raise KeyError(f"not application columns: {sorted(unknown)}")
    event.update(fields)
    return event


def label(application_id: str, confirmed_at: object, source: str = "police_notice") -> dict:
    at = pd.Timestamp(confirmed_at)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    return {
        "application_id": application_id,
        "confirmed_at": at.to_pydatetime(),
        "source": source,
        "row_digest": f"label-{application_id}-{at.value}",
    }


def applications_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=APPLICATION_EVENTS)


def labels_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LABEL_EVENTS)


def listing(
    applicant_key: str, listed_at: object, expires_at: object | None = None, source: str = "bank_internal"
) -> dict:
    """One hand-made listing; ``expires_at`` defaults to five years on. Naive times are UTC."""

    def utc(value: object) -> pd.Timestamp:
        at = pd.Timestamp(value)
        return at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")

    start = utc(listed_at)
    end = start + pd.DateOffset(years=5) if expires_at is None else utc(expires_at)
    return {
        "applicant_key": applicant_key,
        "listed_at": start.to_pydatetime(),
        "expires_at": end.to_pydatetime(),
        "source": source,
        "row_digest": f"listing-{applicant_key}-{start.value}-{end.value}-{source}",
        "key_id": "test-key",
    }


def listings_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=WATCHLIST_EVENTS)


def free_port() -> int:
    """A loopback port free at the time of asking, for a service a test starts.

    The system picks it; another process may take it before the service binds, which a
    test then sees as a service that does not start, not as a wrong answer.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_status(url: str) -> int | None:
    """The status ``url`` answers with, None when nothing answers (a service not up yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def stop(process: subprocess.Popen) -> None:
    """Ask a service a test started to stop; kill it if it has not within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

"""The joint-punishment list the synthetic bank receives, and the listed people who try again.

After a mule account is confirmed, the police and the PBOC put the person behind it
(the applicant, or a corporate account's legal representative) on the 断卡
joint-punishment list (source ``pboc_joint_punishment``) :data:`LISTING_DAYS` days
after the confirmation, for the contract's default 5 years (``expires_at`` is left
empty). A person is listed once, at the first confirmation the bank learns of in
the month it is generated.

Some listed recruits and solo sellers try again :data:`RETRY_DAYS` days after
being listed, at the counter of another branch in the same city, with their own
phone and address. Those re-applications are rows of ``applications.csv`` (mules in
``truth.csv``, of their first scheme and group); the bank never confirms them,
because the account is refused: they are what the ``WATCHLIST`` rule must catch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.synthetic.period import DAY, counter_seconds
from duanka.data.synthetic.rows import COUNTER, SCHEMES, Draft, local_timestamps
from duanka.data.synthetic.world import World

SOURCE = "pboc_joint_punishment"
LISTED = 0.6  # of the people behind confirmed accounts
LISTING_DAYS = (7, 60)  # from the confirmation to the listing
RETRY = 0.25  # of listed people of RETRY_SCHEMES
RETRY_DAYS = (14, 180)  # from the listing to the new application
RETRY_SCHEMES = ("escort_ring", "solo_seller")
WATCHLIST_COLUMNS = ("id_number", "listed_at", "expires_at", "source")


def listings(
    draft: Draft,
    ids: pa.Array,
    confirmed: pa.Table,
    listed: set[str],
    world: World,
    rng: np.random.Generator,
) -> tuple[pa.Table, Draft | None]:
    """The listings that follow one month's confirmations, and the re-applications they lead to.

    Parameters
    ----------
    draft : Draft
        The month's applications, in the order written.
    ids : pyarrow.Array
        Their application ids.
    confirmed : pyarrow.Table
        The month's confirmations (:func:`duanka.data.synthetic.outcomes.confirmations`).
    listed : set of str
        ID numbers listed so far; updated with the people listed here.
    world : World
    rng : numpy.random.Generator

    Returns
    -------
    (pyarrow.Table, Draft or None)
        ``id_number`` and ``listed_at`` (int64 local seconds) of the new listings, and
        the re-applications (any time after the month; the caller drops those after the
        period), or None when there are none.
    """
    row = pc.index_in(confirmed["application_id"], value_set=ids).to_numpy()
    at = confirmed["confirmed_at"].to_numpy()
    order = np.argsort(at, kind="stable")
    row, at = row[order], at[order]
    listing_at = at + rng.integers(LISTING_DAYS[0], LISTING_DAYS[1] + 1, len(row)) * DAY
    chosen = rng.random(len(row)) < LISTED
    retry = rng.random(len(row)) < RETRY
    people = draft["id_number"].take(pa.array(row)).to_pylist()
    first = np.zeros(len(row), bool)
    for i, person in enumerate(people):
        if chosen[i] and person not in listed:
            listed.add(person)
            first[i] = True
    picked = np.flatnonzero(first)
    table = pa.table(
        {
            "id_number": pa.array(people, pa.string()).take(pa.array(picked)),
            "listed_at": pa.array(listing_at[picked]),
        }
    )
    retry_schemes = [SCHEMES.index(s) for s in RETRY_SCHEMES]
    again = picked[np.isin(draft["scheme"][row[picked]], retry_schemes) & retry[picked]]
    if len(again) == 0:
        return table, None
    return table, _reapplications(draft.take(row[again]), listing_at[again], world, rng)


def _reapplications(original: Draft, listed_at: np.ndarray, world: World, rng: np.random.Generator) -> Draft:
    """The same people at the counter of another branch of the same city, some time after listing."""
    n = len(original)
    network = world.network
    day = (listed_at // DAY) + rng.integers(RETRY_DAYS[0], RETRY_DAYS[1] + 1, n)
    at = day * DAY + counter_seconds(n, rng)
    first = original["branch"]
    branch = np.empty(n, np.int64)
    for i in range(n):
        local = network.branches_in(int(network.branch_city[first[i]]))
        others = local[local != first[i]]
        weight = network.branch_weight[others]
        branch[i] = others[rng.choice(len(others), p=weight / weight.sum())] if len(others) else first[i]
    tenure = original["tenure"]
    columns = dict(original.columns)
    columns.update(
        at=at,
        branch=branch,
        channel=np.full(n, COUNTER),
        staff=network.staff_at(branch, rng),
        device=np.full(n, -1),
        escort=pa.nulls(n, pa.string()),
        intermediary=np.full(n, -1),
        photo_tampered=np.zeros(n, bool),
        tenure=np.where(tenure >= 0, tenure + (at - original["at"]) // DAY, -1),
        reapplied=np.ones(n, bool),
    )
    return Draft(columns)


def watchlist_table(parts: list[pa.Table]) -> pa.Table:
    """The watchlist file: every listing in the order it was listed, the contract's columns."""
    if parts:
        listings_ = pa.concat_tables(parts)
    else:
        listings_ = pa.table({"id_number": pa.array([], pa.string()), "listed_at": pa.array([], pa.int64())})
    listings_ = listings_.sort_by([("listed_at", "ascending"), ("id_number", "ascending")])
    n = listings_.num_rows
    return pa.table(
        {
            "id_number": listings_["id_number"],
            "listed_at": local_timestamps(listings_["listed_at"].to_numpy()),
            "expires_at": pa.nulls(n, pa.string()),
            "source": pa.array([SOURCE] * n, pa.string()),
        }
    )

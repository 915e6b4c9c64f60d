"""The linked group of an application: its one definition, and how each engine finds it.

Definition (both engines apply it exactly): for an application ``x`` applied
at ``t``, join applications to their link keys (escort, address, phone,
device, intermediary). In that graph, each key keeps only its
``LINK_FANOUT`` most recent applications with ``t - 30 days <= applied_at < t``
(most recent by applied_at, then application_id). The group is every
application reachable from ``x`` in two hops:

- hop 1: the kept applications of each of ``x``'s keys;
- hop 2: the kept applications of each key of a hop-1 application.

Statistics count the group's applications by *other* applicants (``x``'s own
earlier applications carry the links but are not members): distinct
applicants, distinct branches, the earliest ``applied_at``, how many were
confirmed as mules before ``t``, the distinct applicants listed (joint
punishment) before ``t``, the distinct applicants whose application in
the group came in the last day and the last 7 days before ``t`` (how fast the
group is growing), and the distinct applicants with a group member application
from another province, asking for the full bundle, or giving a new phone
number (what the group looks like, whatever this applicant looks like: a ring
whose next recruit adapts still shows in the recruits before).

Why the bound: a university's escort or a labour agency ties thousands of
applications to one key, and two hops through it would take in much of a
city. Keeping each key's most recent few keeps a group at most
``5·F + 25·F²`` applications (``F`` = fan-out), the online store's work at
most ``5 + 25·F`` small index lookups, while a hub still fills the group to
its cap, so rings and hubs stand out.

Both engines compute the statistics with the same SQL (:func:`statistics_sql`) over the
members they found; only the search differs, each written here against the rule above.
The offline builder ranks every key's applications once and finds every application's
group in a few joins (:func:`linked_group`, DuckDB); the online store asks each key for
its most recent few by an index seek, in one statement (:func:`online_group_sql`, SQLite).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from duanka.features.registry import LINK_FANOUT, LINK_KEYS, LINK_WINDOW_DAYS
from duanka.features.values import DAY_US

if TYPE_CHECKING:
    import duckdb

_W = LINK_WINDOW_DAYS * DAY_US
_F = LINK_FANOUT
GROUP_FLAGS = ("out_of_province", "full_bundle", "new_phone")
"""Flags (:data:`duanka.features.values.FLAG_COLUMNS`) whose applicants in the group are counted."""
ZERO_STATS = ("applicants", "branches", "confirmed", "listed", "new_1d", "new_7d", *GROUP_FLAGS)
"""The statistics that are 0 for an empty group (``first_at`` is NaN)."""
CHUNK = 2_000_000


MEMBER_COLUMNS = ("applicant_key", "branch_id", "ts", "conf", "listed", *GROUP_FLAGS)
"""What :func:`statistics_sql` reads of each member, beside ``x`` and ``t``."""
_MEMBER_SELECT = ", ".join(f"m.{column}" for column in MEMBER_COLUMNS)  # of the member rows ``m``


def statistics_sql(members: str) -> str:
    """The group's statistics, as the query both engines run over the members they found.

    Per applicant first, then per asking application: every statistic but ``branches`` counts
    applicants, and one pass that groups the members by applicant (whether any of their
    applications in the group was listed, came in the last day, ...) and one that sums those
    does the work of eight distinct counts (half the time of the statistics offline at 1M
    applications, the same values; docs/benchmarks.md).

    Parameters
    ----------
    members : str
        A relation of the members: ``x`` (the asking application), ``t`` (its ``applied_at``,
        microseconds) and each member's :data:`MEMBER_COLUMNS`, the asker's own applications
        already left out. Read twice: make it a materialized CTE.

    Returns
    -------
    str
        One row per ``x`` with a member: ``x`` and the statistics, named :data:`ZERO_STATS` and
        ``first_at``. An ``x`` without a member has no row: its statistics are 0 (``first_at``
        null).
    """
    day, week = DAY_US, 7 * DAY_US
    per_applicant = ", ".join(
        [
            "x",
            "MIN(ts) AS first_at",
            "COUNT(*) FILTER (WHERE conf < t) AS confirmed",
            "MAX(CASE WHEN listed < t THEN 1 ELSE 0 END) AS listed",
            f"MAX(CASE WHEN ts >= t - {day} THEN 1 ELSE 0 END) AS new_1d",
            f"MAX(CASE WHEN ts >= t - {week} THEN 1 ELSE 0 END) AS new_7d",
            *(f"MAX(CASE WHEN {flag} THEN 1 ELSE 0 END) AS {flag}" for flag in GROUP_FLAGS),
        ]
    )
    sums = ", ".join(
        f"SUM(a.{stat}) AS {stat}" for stat in ("confirmed", "listed", "new_1d", "new_7d", *GROUP_FLAGS)
    )
    return (
        f"SELECT a.x AS x, COUNT(*) AS applicants, MAX(b.branches) AS branches, "
        f"MIN(a.first_at) AS first_at, {sums} "
        f"FROM (SELECT {per_applicant} FROM {members} GROUP BY x, applicant_key) AS a "
        f"JOIN (SELECT x, COUNT(DISTINCT branch_id) AS branches FROM {members} GROUP BY x) AS b "
        "ON a.x = b.x GROUP BY a.x"
    )


def online_group_sql(indexes: Mapping[str, str], start: str) -> str:
    """The group's statistics for one application, in one SQLite statement.

    Parameters
    ----------
    indexes : mapping
        For each link key, an index of ``apps`` on ``(key, ts, application_id)``: a key's
        kept applications are then its first ``LINK_FANOUT`` entries before ``t``, read backwards.
    start : str
        The named parameter holding ``t`` less the link window (``:t`` holds ``t``).

    Returns
    -------
    str
        The statistics of :func:`statistics_sql`, without ``x``: one row, or none for an empty
        group. Named parameters: ``:t``, ``start``, each link key and ``applicant_key`` of the
        asking application (a null key links nothing).
    """

    def kept(key: str, value: str) -> str:
        return (
            f"SELECT rowid AS id FROM apps INDEXED BY {indexes[key]} WHERE {key} = {value} "
            f"AND ts >= {start} AND ts < :t ORDER BY ts DESC, application_id DESC LIMIT {_F}"
        )

    hop1 = " UNION ".join(f"SELECT id FROM ({kept(key, ':' + key)})" for key in LINK_KEYS)
    # Hop 2 asks each key of a hop-1 member, once; the asker's own keys were asked in hop 1.
    hop2 = " UNION ".join(
        f"SELECT m.rowid FROM (SELECT DISTINCT {key} AS value FROM apps WHERE rowid IN hop1 "
        f"AND {key} IS NOT NULL AND {key} IS NOT :{key}) AS asked "
        f"JOIN apps AS m ON m.rowid IN ({kept(key, 'asked.value')})"
        for key in LINK_KEYS
    )
    return (
        f"WITH hop1(id) AS ({hop1}), hop2(id) AS ({hop2}), "
        f"members AS MATERIALIZED (SELECT 0 AS x, :t AS t, {_MEMBER_SELECT} FROM apps AS m "
        "WHERE m.rowid IN (SELECT id FROM hop1 UNION SELECT id FROM hop2) "
        "AND m.applicant_key <> :applicant_key) "
        f"SELECT {', '.join((*ZERO_STATS, 'first_at'))} FROM ({statistics_sql('members')})"
    )


def _kept_members(queries: str) -> str:
    """SQL for (x, m): the kept applications ``m`` of each query (x, kid, t).

    A key's applications are ranked ``r`` = 1, 2, ... in (ts, idx) order, and
    ``marks`` holds, per key and instant, how many it had up to that instant.
    The ones before ``t`` are then ranks 1..hi and the window holds the last
    ``n`` of them, so the kept ones are ranks hi, hi-1, ..., down ``min(n, F)``.
    """
    return f"""
        WITH bounds AS (
            SELECT q.x, q.kid, COALESCE(hi.cum, 0) AS hi, COALESCE(hi.cum, 0) - COALESCE(lo.cum, 0) AS n
            FROM (SELECT x, kid, t, t - {_W} AS t_lo FROM {queries}) q
            ASOF LEFT JOIN marks hi ON q.kid = hi.kid AND q.t > hi.ts
            ASOF LEFT JOIN marks lo ON q.kid = lo.kid AND q.t_lo > lo.ts
        ), wanted AS (
            SELECT x, kid, hi - UNNEST(range(LEAST(n, {_F}))) AS r FROM bounds WHERE n > 0
        )
        SELECT DISTINCT w.x, l.idx AS m FROM wanted w JOIN link l USING (kid, r)
    """


def linked_group(con: duckdb.DuckDBPyConnection, n: int) -> dict[str, np.ndarray]:
    """Group statistics for the ``n`` applications of the ``apps`` table.

    ``apps`` holds ``idx`` (0..n-1 in (applied_at, application_id) order),
    ``ts`` (microseconds), ``applicant_key``, ``branch_id`` and the link keys
    as non-negative int32 codes, and ``conf`` (microseconds, or NULL).
    Applications are taken :data:`CHUNK` at a time, so the intermediate
    tables stay a few million rows however long the history.

    Returns
    -------
    dict
        The :data:`ZERO_STATS` (0 for an empty group) and ``first_at`` (NaN
        for an empty group), float64 arrays indexed by ``idx``.
    """
    union = " UNION ALL ".join(
        f"SELECT ({i}::BIGINT << 32) | {key} AS kid, ts, idx FROM apps WHERE {key} IS NOT NULL"
        for i, key in enumerate(LINK_KEYS)
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE link AS
        SELECT kid, ts, idx, ROW_NUMBER() OVER (PARTITION BY kid ORDER BY ts, idx) AS r
        FROM ({union})"""
    )
    con.execute("CREATE OR REPLACE TEMP TABLE marks AS SELECT kid, ts, MAX(r) AS cum FROM link GROUP BY ALL")
    out = {name: np.zeros(n) for name in ZERO_STATS}
    out["first_at"] = np.full(n, np.nan)
    for lo in range(0, n, CHUNK):
        stats = _chunk(con, lo, min(n, lo + CHUNK))
        at = np.asarray(stats.pop("x"), dtype=np.int64)
        for name, found in stats.items():
            out[name][at] = np.asarray(found, dtype=np.float64)
    con.execute("DROP TABLE link")
    con.execute("DROP TABLE marks")
    return out


def _chunk(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Statistics of the applications with ``lo <= idx < hi`` that have a non-empty group."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE hop1 AS "
        + _kept_members(f"(SELECT idx AS x, kid, ts AS t FROM link WHERE idx >= {lo} AND idx < {hi})")
    )
    # Hop 2 asks about each key of a hop-1 member, at x's time; x's own keys are hop 1 already.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE q2 AS
        SELECT DISTINCT h.x, l.kid, a.ts AS t
        FROM hop1 h JOIN link l ON l.idx = h.m JOIN apps a ON a.idx = h.x
        ANTI JOIN link own ON own.idx = h.x AND own.kid = l.kid"""
    )
    con.execute("CREATE OR REPLACE TEMP TABLE hop2 AS " + _kept_members("q2"))
    stats = con.execute(
        f"""WITH members AS MATERIALIZED (
            SELECT g.x, xa.ts AS t, {_MEMBER_SELECT}
            FROM (SELECT x, m FROM hop1 UNION SELECT x, m FROM hop2) g
            JOIN apps xa ON xa.idx = g.x
            JOIN apps m ON m.idx = g.m
            WHERE m.applicant_key <> xa.applicant_key
        ) {statistics_sql("members")}"""
    ).fetchnumpy()
    for table in ("hop1", "q2", "hop2"):
        con.execute(f"DROP TABLE {table}")
    return stats

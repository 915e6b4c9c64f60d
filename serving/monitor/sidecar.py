"""The monitoring's sidecar: counts kept beside the decision record, so each run reads only new rows.

``DIR/serving/monitor.db`` (SQLite) holds what the monitoring plan needs as counts: decisions per
day and band, overall and per branch; per week and month the reference bins of the score and of
each feature, and missing values; reason codes on alerts per month; decisions per month and
fairness group; and one small row per decided application (its time, band and groups), which
the labels are joined to once their outcome window closes. ``meta.watermark`` is the last
decision ``seq`` counted: a run reads the decisions after it and adds their counts, watermark
included, in one transaction, so a crash counts a chunk wholly or not at all.

The sidecar is a cache: deleting it rebuilds it from the record. It is rebuilt by itself when
its layout changes, when the record at the path is another one (its first chain value
differs), or when a model's reference, unknown when its decisions were counted, has been found.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.data.private import private_file
from duanka.serving.monitor.baselines import Baseline

LAYOUT = "2"  # of the tables below: a sidecar of another layout is rebuilt, never misread

_AGGREGATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # table: (key columns, summed columns)
    "models": (("booster", "version", "day"), ("n",)),
    "day_bands": (("day", "band"), ("n",)),
    "branch_bands": (("day", "branch", "band"), ("n",)),
    "missing": (("period", "feature"), ("n",)),
    "reasons": (("month", "code"), ("n",)),
    "origin": (("month", "kind"), ("n",)),
    "groups": (("month", "dimension", "grp"), ("n", "alerts")),
}
DECIDED_COLUMNS = (
    "application_id",
    "applied_us",
    "band",
    "age_band",
    "origin",
    "channel",
    "account_type",
    "gender",
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS baselines (booster TEXT PRIMARY KEY, version TEXT NOT NULL, "
    "body TEXT NOT NULL, settled INTEGER NOT NULL)",
    *(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{c} TEXT" if c != "bin" else "bin INTEGER" for c in keys)
        + ", "
        + ", ".join(f"{c} INTEGER NOT NULL" for c in sums)
        + f", PRIMARY KEY ({', '.join(keys)})) WITHOUT ROWID"
        for table, (keys, sums) in _AGGREGATES.items()
    ),
    # a variable's rows per reference bin, as one array (int64, little-endian) per period: twelve
    # rows' worth in one, so that a year of weeks of 72 features reads in milliseconds
    "CREATE TABLE IF NOT EXISTS bins (period TEXT, booster TEXT, feature TEXT, counts BLOB NOT NULL, "
    "PRIMARY KEY (period, booster, feature)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS decided (application_id TEXT PRIMARY KEY, applied_us INTEGER NOT NULL, "
    "band TEXT NOT NULL, age_band TEXT, origin TEXT, channel TEXT, account_type TEXT, gender TEXT) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS links (application_id TEXT PRIMARY KEY, keys TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS figures (name TEXT PRIMARY KEY, digest TEXT NOT NULL, uri TEXT NOT NULL)",
)
_COUNTED = (*_AGGREGATES, "bins", "decided", "links")


class Sidecar:
    """The sidecar SQLite file at ``path`` (created, owner-only, when new).

    Parameters
    ----------
    path : Path
        ``DIR/serving/monitor.db`` (:attr:`duanka.serving.state.ServingPaths.monitor`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(private_file(self.path), isolation_level=None, timeout=30)
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")  # a cache: a lost run is counted again
        tables = {
            name for (name,) in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "meta" in tables and self.meta("layout") not in (None, LAYOUT):
            # counts of another layout: its tables may have other columns, so they go, not just their rows
            for table in tables:
                self._con.execute(f"DROP TABLE {table}")
        for statement in _SCHEMA:
            self._con.execute(statement)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def meta(self, name: str) -> str | None:
        row = self._con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def watermark(self) -> int:
        """The last decision ``seq`` counted (0: none)."""
        return int(self.meta("watermark") or 0)

    def current_for(self, identity: str) -> bool:
        """Whether the counts are of this layout and of the record whose first chain value is ``identity``."""
        return self.meta("layout") == LAYOUT and self.meta("identity") in (None, identity)

    def reset(self, identity: str) -> None:
        """Forget every count: the next run counts the record from its first decision."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            for table in _COUNTED:
                con.execute(f"DELETE FROM {table}")
            con.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                [("layout", LAYOUT), ("identity", identity), ("watermark", "0")],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def baselines(self) -> dict[str, Baseline]:
        """The baseline each model's decisions were counted with, by booster."""
        return {
            booster: Baseline.from_json(booster, version, body, settled=bool(settled))
            for booster, version, body, settled in self._con.execute(
                "SELECT booster, version, body, settled FROM baselines"
            )
        }

    def keep_baseline(self, baseline: Baseline) -> None:
        """Note the baseline a model's decisions are counted with (an unsettled one is asked again)."""
        self._con.execute(
            "INSERT OR REPLACE INTO baselines (booster, version, body, settled) VALUES (?, ?, ?, ?)",
            (baseline.booster_sha256, baseline.model_version, baseline.to_json(), int(baseline.settled)),
        )

    # ------------------------------------------------------------------ writing
    def add(
        self,
        counts: Mapping[str, pd.DataFrame],
        decided: pd.DataFrame,
        *,
        after: int,
        watermark: int,
    ) -> bool:
        """Add one chunk's counts and decided rows, and move the watermark, in one transaction.

        Parameters
        ----------
        counts : mapping of table name to pandas.DataFrame
            Rows of the aggregate tables (their key and summed columns), keys unique per frame.
        decided : pandas.DataFrame
            :data:`DECIDED_COLUMNS` of the chunk's decisions.
        after : int
            The watermark the chunk was read after.
        watermark : int
            The last ``seq`` the chunk covered.

        Returns
        -------
        bool
            False, with nothing added, when the watermark is no longer ``after``: another run
            (the service's page beside the command) counted these decisions first.
        """
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            if self.watermark != after:
                con.execute("ROLLBACK")
                return False
            for table, frame in counts.items():
                if frame.empty:
                    continue
                if table == "bins":
                    self._add_bins(frame)
                    continue
                keys, sums = _AGGREGATES[table]
                columns = (*keys, *sums)
                con.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                    f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                    + ", ".join(f"{c} = {c} + excluded.{c}" for c in sums),
                    _python_rows(frame, columns),
                )
            if not decided.empty:
                # an application decided twice (not a replay) keeps its first decision's row
                con.executemany(
                    f"INSERT OR IGNORE INTO decided ({', '.join(DECIDED_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DECIDED_COLUMNS))})",
                    _python_rows(decided, DECIDED_COLUMNS),
                )
            con.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('watermark', ?)", (str(watermark),)
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return True

    def _add_bins(self, frame: pd.DataFrame) -> None:
        """Add rows per bin (``period``, ``booster``, ``feature``, ``bin``, ``n``) to the stored arrays."""
        keys = ["period", "booster", "feature"]
        found: dict[tuple[str, str, str], np.ndarray] = {}
        for period, booster in frame[["period", "booster"]].drop_duplicates().itertuples(index=False):
            for feature, counts in self._con.execute(
                "SELECT feature, counts FROM bins WHERE period = ? AND booster = ?", (period, booster)
            ):
                found[(period, booster, feature)] = np.frombuffer(counts, dtype="<i8")
        rows = []
        for key, part in frame.groupby(keys, sort=False):
            bins, n = part["bin"].to_numpy(dtype=np.int64), part["n"].to_numpy(dtype=np.int64)
            stored = found.get(key, np.zeros(0, dtype=np.int64))
            width = max(len(stored), int(bins.max()) + 1)
            total = np.zeros(width, dtype=np.int64)
            total[: len(stored)] = stored
            np.add.at(total, bins, n)
            rows.append((*key, total.astype("<i8").tobytes()))
        self._con.executemany(
            "INSERT OR REPLACE INTO bins (period, booster, feature, counts) VALUES (?, ?, ?, ?)", rows
        )

    def bins(self, where: str = "", parameters: Sequence[object] = ()) -> pd.DataFrame:
        """``period``, ``booster``, ``feature`` and ``counts`` (an int64 array per row) of the bins table."""
        rows = self._con.execute(
            "SELECT period, booster, feature, counts FROM bins" + (f" WHERE {where}" if where else ""),
            list(parameters),
        ).fetchall()
        return pd.DataFrame(
            {
                "period": [r[0] for r in rows],
                "booster": [r[1] for r in rows],
                "feature": [r[2] for r in rows],
                "counts": [np.frombuffer(r[3], dtype="<i8") for r in rows],
            }
        )

    def keep_links(self, links: Mapping[str, Mapping[str, str | None]]) -> None:
        """Cache the link keys (pseudonyms) of confirmed mules, which rings are drawn from."""
        self._con.executemany(
            "INSERT OR REPLACE INTO links (application_id, keys) VALUES (?, ?)",
            [(a, json.dumps(dict(k), sort_keys=True)) for a, k in links.items()],
        )

    # ------------------------------------------------------------------ reading
    def table(self, name: str, where: str = "", parameters: Sequence[object] = ()) -> pd.DataFrame:
        """An aggregate table, or its rows matching ``where`` (SQL over its columns)."""
        keys, sums = _AGGREGATES[name]
        query = f"SELECT {', '.join((*keys, *sums))} FROM {name}" + (f" WHERE {where}" if where else "")
        return pd.read_sql_query(query, self._con, params=list(parameters))

    def decided_of(self, application_ids: Iterable[str]) -> pd.DataFrame:
        """The decided rows of ``application_ids`` (those not decided are absent)."""
        return pd.read_sql_query(
            f"SELECT {', '.join(DECIDED_COLUMNS)} FROM decided "
            "WHERE application_id IN (SELECT value FROM json_each(?))",
            self._con,
            params=[json.dumps(list(application_ids))],
        )

    def links_of(self, application_ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
        """The cached link keys of ``application_ids`` (those not cached are absent)."""
        return {
            a: json.loads(k)
            for a, k in self._con.execute(
                "SELECT application_id, keys FROM links "
                "WHERE application_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(application_ids)),),
            )
        }

    def figure(self, name: str, digest: str) -> str | None:
        """The figure ``name`` drawn from inputs whose digest is ``digest``, if it was drawn last time."""
        row = self._con.execute(
            "SELECT uri FROM figures WHERE name = ? AND digest = ?", (name, digest)
        ).fetchone()
        return None if row is None else str(row[0])

    def keep_figure(self, name: str, digest: str, uri: str) -> None:
        """Keep the latest drawing of figure ``name``: a run whose inputs did not change draws none."""
        self._con.execute(
            "INSERT OR REPLACE INTO figures (name, digest, uri) VALUES (?, ?, ?)", (name, digest, uri)
        )

    def row_counts(self) -> dict[str, int]:
        """Rows per table: what the sidecar holds."""
        return {t: int(self._con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in _COUNTED}


def _python_rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """Rows of plain Python values (sqlite3 binds no numpy scalar), None for a missing value."""
    selected = frame.loc[:, list(columns)].astype(object)
    return list(selected.where(selected.notna(), None).itertuples(index=False, name=None))

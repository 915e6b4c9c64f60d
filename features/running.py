"""Running totals: a windowed count or flag sum in two index seeks, whatever a key's volume.

Every application row in the online state carries, for each entity that has counts or
flag sums (a branch, a staff member, an intermediary ...), how many of that entity's
applications come up to and including it in ``(applied_at, application_id)`` order, and
how many of those had each flag. The count in the window ``[t - w, t)`` is then
``total(before t) - total(before t - w)``: two seeks, where a scan would read every row of
a busy branch's quarter (tens of thousands at a large bank), which is what set the tail
latency of a scored application before.

Totals are inclusive and never restart: pruning old rows leaves the later rows' totals as
they were, and "the total before x" when no held row of the key is before x is the first
held row's total less its own contribution (everything before it, pruned or not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from duanka.features.declaration import Aggregate, Entity, Op
from duanka.features.registry import AGGREGATES

Execute = Callable[[str, Mapping[str, object]], "object"]
"""``sqlite3.Connection.execute``: a statement and its named parameters."""


@dataclass(frozen=True)
class RunningTotals:
    """The running count and flag sums of one entity, and the SQL that reads and keeps them.

    Every statement takes named parameters: the key columns by name (``:branch_id``), and
    ``:before``, or a row's ``:ts``, ``:application_id`` and flags by name.
    """

    entity: Entity
    aggregates: tuple[Aggregate, ...]
    flags: tuple[str, ...]
    shared_index: str | None = None  # an index of the distinct counts that also carries the totals

    # The column names and statements below are derived from the fields above, which never change:
    # each is built once (cached), not at every one of a decision's ~40 reads.

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The row's running-total columns: the count, then one per flag."""
        prefix = f"run_{self.entity.label}"
        return (f"{prefix}_n", *(f"{prefix}_{flag}" for flag in self.flags))

    @cached_property
    def windows_us(self) -> tuple[int, ...]:
        return tuple(sorted({a.window_us for a in self.aggregates}))

    @cached_property
    def index_name(self) -> str:
        return self.shared_index or f"run_{self.entity.label}"

    @cached_property
    def index_columns(self) -> tuple[str, ...]:
        """What the index holds after the key and (ts, application_id): totals and own flags."""
        return (*self.columns, *self.flags)

    def _where_key(self) -> str:
        return " AND ".join(f"{k} = :{k}" for k in self.entity.keys)

    def index_sql(self) -> str | None:
        """A covering index: key, order, totals and own flags (for the first-row base).

        None when the totals live in a shared index, which its owner creates.
        """
        if self.shared_index is not None:
            return None
        keys = self.entity.keys
        columns = ", ".join([*keys, "ts", "application_id", *self.index_columns])
        present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
        return f"CREATE INDEX IF NOT EXISTS {self.index_name} ON apps ({columns}) WHERE {present}"

    def _select(self, what: str, where: str, order: str) -> str:
        present = " AND ".join(f"{k} IS NOT NULL" for k in self.entity.keys)
        return (
            f"SELECT {what} FROM apps INDEXED BY {self.index_name} "
            f"WHERE {self._where_key()} AND {present}{where} ORDER BY {order} LIMIT 1"
        )

    @cached_property
    def last_before_sql(self) -> str:
        """Totals of the key's last row with ``ts < :before``."""
        return self._select(", ".join(self.columns), " AND ts < :before", "ts DESC, application_id DESC")

    @cached_property
    def preceding_sql(self) -> str:
        """Totals of the key's last row before ``(:ts, :application_id)``."""
        return self._select(
            ", ".join(self.columns),
            " AND ts <= :ts AND (ts < :ts OR application_id < :application_id)",
            "ts DESC, application_id DESC",
        )

    @cached_property
    def first_base_sql(self) -> str:
        """What the key's first held row's totals count before it."""
        own = [
            f"{self.columns[0]} - 1",
            *(f"{c} - {f}" for c, f in zip(self.columns[1:], self.flags, strict=True)),
        ]
        return self._select(", ".join(own), "", "ts, application_id")

    @cached_property
    def shift_sql(self) -> str:
        """Add one application (its flags by name) to the totals of the key's later rows."""
        sets = [f"{self.columns[0]} = {self.columns[0]} + 1"]
        sets += [f"{c} = {c} + :{f}" for c, f in zip(self.columns[1:], self.flags, strict=True)]
        return (
            f"UPDATE apps INDEXED BY {self.index_name} SET {', '.join(sets)} "
            f"WHERE {self._where_key()} AND ts >= :ts AND (ts > :ts OR application_id > :application_id)"
        )

    def base(self, execute: Execute, before_sql: str, parameters: Mapping[str, object]) -> tuple[int, ...]:
        """Totals of everything of the key before a point, held or pruned."""
        row = execute(before_sql, parameters).fetchone()  # type: ignore[attr-defined]
        if row is None:
            row = execute(self.first_base_sql, parameters).fetchone()  # type: ignore[attr-defined]
        return tuple(row) if row is not None else (0,) * len(self.columns)

    def counts(self, execute: Execute, keys: Mapping[str, object], t: int) -> dict[str, float]:
        """Every aggregate of this entity for an application at ``t`` (microseconds).

        ``keys`` holds at least this entity's key columns, by name, none of them null.
        """
        key = {k: keys[k] for k in self.entity.keys}
        at_t = self.base(execute, self.last_before_sql, {**key, "before": t})
        found: dict[str, float] = {}
        for span in self.windows_us:
            start = self.base(execute, self.last_before_sql, {**key, "before": t - span})
            in_window = [now - then for now, then in zip(at_t, start, strict=True)]
            for a in self.aggregates:
                if a.window_us == span:
                    position = 0 if a.op is Op.COUNT else 1 + self.flags.index(str(a.column))
                    found[a.name] = float(in_window[position])
        return found

    def row_totals(self, execute: Execute, row: Mapping[str, object]) -> dict[str, int]:
        """The totals a new row carries, by column: those before it plus its own.

        ``row`` holds the new row's key columns, ``ts``, ``application_id`` and flags by name.
        """
        before = self.base(execute, self.preceding_sql, row)
        own = (1, *(int(row[f]) for f in self.flags))  # type: ignore[call-overload]
        return {c: b + o for c, b, o in zip(self.columns, before, own, strict=True)}

    def shift_later(self, execute: Execute, row: Mapping[str, object]) -> None:
        """A row that arrived after later ones of its key: count it in theirs."""
        execute(self.shift_sql, row)

    def window_sql(self) -> list[str]:
        """The same totals for a whole table at once, as SQL window expressions (DuckDB)."""
        keys = ", ".join(self.entity.keys)
        present = " AND ".join(f"{k} IS NOT NULL" for k in self.entity.keys)
        window = f"(PARTITION BY {keys} ORDER BY ts, application_id ROWS UNBOUNDED PRECEDING)"
        sums = [f"COUNT(*) OVER {window}", *(f"SUM({f}) OVER {window}" for f in self.flags)]
        return [
            f"CASE WHEN {present} THEN CAST({total} AS BIGINT) END AS {column}"
            for total, column in zip(sums, self.columns, strict=True)
        ]


def running_totals(aggregates: Sequence[Aggregate] = AGGREGATES) -> tuple[RunningTotals, ...]:
    """One :class:`RunningTotals` per entity with count or flag aggregates among ``aggregates``."""
    by_entity: dict[Entity, list[Aggregate]] = {}
    for a in aggregates:
        if a.op in (Op.COUNT, Op.FLAGGED):
            by_entity.setdefault(a.entity, []).append(a)
    return tuple(
        RunningTotals(
            entity,
            tuple(aggregates),
            tuple(dict.fromkeys(str(a.column) for a in aggregates if a.op is Op.FLAGGED)),
        )
        for entity, aggregates in by_entity.items()
    )

"""A whole synthetic bank: plan the schemes, then generate and write month by month.

Schemes and look-alikes (a few percent of the rows) are planned for the whole
period first, because rings and agencies span months; the ordinary customers fill
each month up to its share of the requested volume, so the files hold exactly
``applications`` rows (unless the schemes alone exceed it). Each month's
confirmations put people on the joint-punishment list, and the re-applications of
listed people (:mod:`duanka.data.synthetic.watchlist`) join a later month in place of as
many ordinary customers. Memory is bounded by one month's rows plus the planned
schemes.

A scenario (:mod:`duanka.data.synthetic.scenarios`) says how far the rings have adapted
to a bank that watches for them; ``default`` is today's world, and for it a seed
gives the same files it gave before scenarios existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.progress import Progress

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.synthetic import scenarios
from duanka.data.synthetic.lookalikes import agency_rows, factory_rows, university_rows
from duanka.data.synthetic.outcomes import confirmations, label_table
from duanka.data.synthetic.period import DAY, Period, day_weights
from duanka.data.synthetic.population import legit_rows
from duanka.data.synthetic.rows import TRUTH_COLUMNS, Draft, application_ids, render
from duanka.data.synthetic.scenarios import Scenario
from duanka.data.synthetic.schemes import insider_rows, ring_rows, shell_rows, solo_rows
from duanka.data.synthetic.watchlist import listings, watchlist_table
from duanka.data.synthetic.world import World, build_world
from duanka.data.synthetic.writer import CsvFile

# Each planner draws from its own stream, so that changing one leaves the others' rows alone.
_PLANNERS = (university_rows, factory_rows, agency_rows, ring_rows, shell_rows, insider_rows, solo_rows)
_WORLD, _PLAN, _MONTH, _OUTCOME, _LISTING = range(5)


@dataclass(frozen=True)
class GeneratedBank:
    """What :func:`generate_bank` wrote."""

    applications: Path
    labels: Path
    truth: Path
    watchlist: Path
    n_applications: int
    n_labels: int
    n_mules: int
    n_listed: int
    n_reapplications: int
    scenario: Scenario


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, *stream])


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Whole numbers summing to ``total``, proportional to ``weights`` (largest remainder)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(counts - exact, kind="stable")[:short]] += 1
    return counts


def _planned(world: World, seed: int) -> Draft | None:
    """Every scheme and look-alike of the period in time order; None if there are none."""
    drafts = [plan(world, _rng(seed, _PLAN, i)) for i, plan in enumerate(_PLANNERS)]
    drafts = [d for d in drafts if d is not None]
    if not drafts:
        return None
    planned = Draft.concat(drafts)
    return planned.take(np.argsort(planned["at"], kind="stable"))


def generate_bank(
    out_dir: Path,
    *,
    months: int = 12,
    applications: int = 50_000,
    seed: int = 7,
    start: date = date(2024, 1, 1),
    progress: bool = False,
    scenario: str | Scenario = "default",
) -> GeneratedBank:
    """Write a synthetic bank: ``applications.csv``, ``labels.csv``, ``watchlist.csv`` and ``truth.csv``.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into; created if missing, files in it overwritten.
    months : int
        Calendar months of openings, from ``start``.
    applications : int
        Rows of ``applications.csv``, about 1 % of them mules.
    seed : int
        The same seed (and other arguments) gives byte-identical files.
    start : datetime.date
        First day of the period.
    progress : bool
        Show a progress bar, one step per month.
    scenario : str or Scenario
        How far the rings have adapted: a name from
        :data:`duanka.data.synthetic.scenarios.SCENARIOS` or a Scenario. Each scheme keeps
        its name in ``truth.csv`` whatever the scenario.

    Returns
    -------
    GeneratedBank
        The paths written and their row counts.

    Raises
    ------
    ValueError
        If ``months`` or ``applications`` is below 1, or the scenario is unknown.
    """
    if months < 1 or applications < 1:
        raise ValueError("months and applications must be at least 1")
    adapted = scenarios.scenario(scenario)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    period = Period(start, months)
    chunks = period.chunks()
    world = build_world(period, applications, _rng(seed, _WORLD), adapted)
    paths = {name: out_dir / f"{name}.csv" for name in ("applications", "labels", "truth", "watchlist")}

    with Progress(disable=not progress) as bar:
        task = bar.add_task("planning schemes", total=len(chunks) + 1)
        planned = _planned(world, seed)
        edges = np.array([c.first for c in chunks] + [chunks[-1].stop]).astype(np.int64) * DAY
        planned_at = np.zeros(0, np.int64) if planned is None else planned["at"]
        bounds = np.searchsorted(planned_at, edges)
        month_weight = np.array([day_weights(np.arange(c.first, c.stop)).sum() for c in chunks])
        ordinary = _allocate(max(applications - len(planned_at), 0), month_weight)
        bar.advance(task)

        written = mules = reapplications = 0
        confirmed = []
        listed_people: set[str] = set()
        listed: list[pa.Table] = []
        pending: Draft | None = None  # re-applications of listed people, in later months
        with (
            CsvFile(paths["applications"], APPLICATIONS.names) as apps,
            CsvFile(paths["truth"], TRUTH_COLUMNS) as truth,
        ):
            for chunk, count, lo, hi in zip(chunks, ordinary, bounds[:-1], bounds[1:], strict=True):
                bar.update(task, description=f"generating {chunk.label}")
                due, pending = _due(pending, int(chunk.stop.astype(np.int64)) * DAY)
                retries = 0 if due is None else len(due)
                parts = [
                    legit_rows(max(int(count) - retries, 0), chunk, world, _rng(seed, _MONTH, chunk.index))
                ]
                if hi > lo:
                    parts.append(planned.take(np.arange(lo, hi)))
                if due is not None:
                    parts.append(due)
                draft = Draft.concat(parts)
                draft = draft.take(np.argsort(draft["at"], kind="stable"))
                ids = application_ids(np.arange(written + 1, written + len(draft) + 1))
                table, truth_table = render(draft, world.network, ids)
                apps.write(table)
                truth.write(truth_table)
                month_confirmed = confirmations(draft, ids, _rng(seed, _OUTCOME, chunk.index), seed)
                confirmed.append(month_confirmed)
                new, again = listings(
                    draft, ids, month_confirmed, listed_people, world, _rng(seed, _LISTING, chunk.index)
                )
                listed.append(new)
                pending = (
                    again
                    if pending is None
                    else (pending if again is None else Draft.concat([pending, again]))
                )
                written += len(draft)
                reapplications += retries
                mules += int(pc.sum(truth_table["is_mule"]).as_py())
                bar.advance(task)

    labels = label_table(confirmed)
    with CsvFile(paths["labels"], LABELS.names) as sink:
        sink.write(labels)
    watchlist = watchlist_table(listed)
    with CsvFile(paths["watchlist"], WATCHLIST.names) as sink:
        sink.write(watchlist)
    return GeneratedBank(
        applications=paths["applications"],
        labels=paths["labels"],
        truth=paths["truth"],
        watchlist=paths["watchlist"],
        n_applications=written,
        n_labels=labels.num_rows,
        n_mules=mules,
        n_listed=watchlist.num_rows,
        n_reapplications=reapplications,
        scenario=adapted,
    )


def _due(pending: Draft | None, stop: int) -> tuple[Draft | None, Draft | None]:
    """The pending re-applications before ``stop`` (local seconds), and the rest."""
    if pending is None:
        return None, None
    now = pending["at"] < stop
    due = pending.take(np.flatnonzero(now)) if now.any() else None
    rest = pending.take(np.flatnonzero(~now)) if not now.all() else None
    return due, rest

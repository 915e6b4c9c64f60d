"""The monitoring counts each decision once: a run reads only what the record gained since the last,
never writes to the record, and its counts are those a first run over the whole record makes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from duanka.serving.monitor.engine import Monitoring, MonitorInputs, run_monitoring
from duanka.serving.monitor.sidecar import DECIDED_COLUMNS
from tests import monitor_records as records

WEEKS_FIRST = 10
COUNTED = ("models", "day_bands", "branch_bands", "bins", "missing", "reasons", "origin", "groups", "decided")


def run(record: Path, sidecar: Path, labels: pd.DataFrame) -> Monitoring:
    baseline = records.baseline()
    inputs = MonitorInputs(
        record, sidecar, lambda booster, version: baseline, records.OUTCOME_WINDOW_DAYS, labels=lambda: labels
    )
    return run_monitoring(inputs, as_of=records.AS_OF)


def counts(sidecar: Path) -> dict[str, pd.DataFrame]:
    """Every table of counts, rows in one order."""
    with sqlite3.connect(sidecar) as con:
        found = {}
        for table in COUNTED:
            frame = pd.read_sql_query(f"SELECT * FROM {table}", con)
            found[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
        return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A record monitored after ten weeks and again after twelve, and a first run over all twelve."""
    folder = tmp_path_factory.mktemp("grown")
    frame, X = records.decisions()
    labels = records.labels(frame)
    first = (frame["day"] < WEEKS_FIRST * 7).to_numpy()
    record = folder / "decisions.db"
    records.write(record, frame.loc[first], X[first])
    before = run(record, folder / "monitor.db", labels)
    records.write(record, frame.loc[~first], X[~first])
    untouched = digest(record)
    after = run(record, folder / "monitor.db", labels)
    return {
        "frame": frame,
        "first": int(first.sum()),
        "before": before,
        "after": after,
        "untouched": untouched == digest(record),
        "whole": run(record, folder / "whole.db", labels),
        "sidecars": (folder / "monitor.db", folder / "whole.db"),
    }


def test_the_second_run_reads_only_the_decisions_recorded_since_the_first(grown):
    assert grown["before"].refreshed.read == grown["first"]
    assert grown["after"].refreshed.read == len(grown["frame"]) - grown["first"]
    assert grown["after"].refreshed.restarted == ""
    assert grown["whole"].refreshed.read == len(grown["frame"])


def test_counting_in_two_runs_gives_the_counts_of_one(grown):
    twice, once = (counts(p) for p in grown["sidecars"])
    for table in COUNTED:
        pd.testing.assert_frame_equal(twice[table], once[table], obj=table)
    assert len(once["decided"]) == len(grown["frame"]) and list(once["decided"].columns) == list(
        DECIDED_COLUMNS
    )


def test_the_plan_after_two_runs_is_the_plan_of_one(grown):
    def seen(monitoring: Monitoring) -> list[tuple]:
        return [(r.key, r.status, r.value, r.finding, r.computed, str(r.details)) for r in monitoring.rows]

    assert seen(grown["after"]) == seen(grown["whole"])


def test_the_record_is_only_read(grown):
    assert grown["untouched"]


def test_a_run_with_nothing_new_reads_nothing_and_draws_nothing(grown, monkeypatch):
    import duanka.serving.monitor.plots as plots

    drawn = []
    for name in (
        "band_shares",
        "branch_shares",
        "drift",
        "heatmap",
        "lines",
        "ratios",
        "against_expected",
        "stacked",
    ):
        monkeypatch.setattr(plots, name, lambda *a, _n=name: drawn.append(_n) or "data:image/png;base64,")
    again = run(
        Path(grown["sidecars"][0]).with_name("decisions.db"),
        grown["sidecars"][0],
        records.labels(grown["frame"]),
    )
    assert again.refreshed.read == 0
    assert drawn == []  # every figure's inputs were those of the last run

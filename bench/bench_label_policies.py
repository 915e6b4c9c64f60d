"""Which label policy the shipped refit should use, by rolling backtest.

For each event store given (a generated bank ingested, e.g. by ``bench/bench_quality.py``,
which leaves ``WORK/<world>/store`` and ``WORK/<world>/bank/truth.csv``), runs the same
backtest once per label policy (``training/labels.py``) and prints the pooled recall at
1 % alerts with its 95 % bootstrap interval, PR-AUC and the realised band shares, beside
the evidence model (fitted on the split's training months only: what a run registered
before shipped models were refits). The default policy in ``training/labels.py`` is the
one this table favours over worlds; docs/model.md records it.

    python bench/bench_label_policies.py --work /tmp/bench-quality --worlds default-7 adapted-7
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.training.backtest import EVIDENCE_ROW, BacktestConfig, backtest
from duanka.training.labels import LabelPolicy
from duanka.training.run import TrainConfig
from duanka.training.tracking import configure

START = pd.Timestamp("2025-01-01T00:00:00+08:00").tz_convert("UTC")
END = pd.Timestamp("2025-07-01T00:00:00+08:00").tz_convert("UTC")
R1 = "recall@1.0%"


def _cell(row: pd.Series, key: str) -> str:
    return f"{row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="Folder with one <world>/store per world.")
    parser.add_argument("--worlds", nargs="+", required=True)
    parser.add_argument("--policies", nargs="+", default=[p.value for p in LabelPolicy])
    parser.add_argument("--horizon-days", type=int, default=60)
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args()

    console = Console()
    table = Table(title=f"label policies, rolling backtest {START.date()} – {END.date()} (monthly, pooled)")
    for column in ("world", "model", R1 + " [95% CI]", "PR-AUC [95% CI]", "critical", "critical+high", "s"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(models_dir=Path(tmp))
        configure(settings)
        for world in args.worlds:
            store = EventStore(args.work / world / "store")
            evidence_row = None
            for policy in args.policies:
                train = TrainConfig(
                    as_of=START, fast=True, label_policy=LabelPolicy(policy), horizon_days=args.horizon_days
                )
                started = time.perf_counter()
                result = backtest(
                    store, BacktestConfig(START, END, train, n_boot=args.n_boot), settings.outcome_window_days
                )
                seconds = time.perf_counter() - started
                row = result.table.loc["pooled"]
                table.add_row(
                    world,
                    f"shipped, {policy}",
                    _cell(row, R1),
                    _cell(row, "pr_auc"),
                    f"{row['critical_share']:.2%}",
                    f"{row['alert_share']:.2%}",
                    f"{seconds:.0f}",
                )
                evidence_row = result.table.loc[EVIDENCE_ROW]
                console.print(f"{world} {policy}: {row[R1]:.3f} in {seconds:.0f} s")
            if evidence_row is not None:
                table.add_row(
                    world,
                    "evidence (before refits)",
                    _cell(evidence_row, R1),
                    _cell(evidence_row, "pr_auc"),
                    f"{evidence_row['critical_share']:.2%}",
                    f"{evidence_row['alert_share']:.2%}",
                    "",
                )
    console.print(table)


if __name__ == "__main__":
    main()

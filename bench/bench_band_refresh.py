"""Would band cuts refreshed daily from the last days' scores hold the alert budget every month?

Today's cuts are fixed at training time (quantiles of the shipped model's scores over the
61 days before the as-of date), so a month's critical share follows its share of confident
mules. This bench replays a monthly rolling backtest and, beside the shipped cuts, assigns
bands with cuts recomputed at each local midnight from the scores of the previous
``--window`` days (the period's own model scoring them point in time), then prints each
month's realised critical and critical + high shares. It measures a design; nothing in the
product uses refreshed cuts yet (docs/model.md, "Known gaps").

    python bench/bench_band_refresh.py --store /tmp/bench-quality/default-7/store --window 14 30
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.features.training_set import build_training_set
from duanka.training.backtest import BacktestConfig, run_period
from duanka.training.bands import Bands
from duanka.training.periods import Every, period_starts
from duanka.training.run import TrainConfig
from duanka.training.tracking import configure

START = pd.Timestamp("2025-01-01T00:00:00+08:00").tz_convert("UTC")
END = pd.Timestamp("2025-07-01T00:00:00+08:00").tz_convert("UTC")
DAY = pd.Timedelta(days=1)
FIXED = 0  # the window column of the shipped, fixed cuts


def refreshed_shares(
    applied: pd.Series, scores: np.ndarray, start, end, window_days: int
) -> tuple[int, int, int]:
    """Critical, critical + high and scored counts over ``(start, end]`` with daily cuts."""
    critical = alert = n = 0
    day = start
    while day < end:
        history = scores[((applied > day - window_days * DAY) & (applied <= day)).to_numpy()]
        today = scores[((applied > day) & (applied <= min(day + DAY, end))).to_numpy()]
        band = Bands.from_budget(history).assign(today)
        critical += int((band == "critical").sum())
        alert += int(np.isin(band, ["critical", "high"]).sum())
        n += len(today)
        day += DAY
    return critical, alert, n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--window", type=int, nargs="+", default=[14, 30])
    args = parser.parse_args()
    configure(Settings(models_dir=Path(tempfile.mkdtemp())))
    store = EventStore(args.store)
    built = build_training_set(
        store.applications(), store.labels(), listings=store.watchlist(), as_of=END, outcome_window_days=180
    )
    labels = store.labels(["application_id", "confirmed_at"]).to_pandas()
    cfg = BacktestConfig(START, END, TrainConfig(as_of=START, fast=True), n_boot=10)
    starts = period_starts(START, END, Every.MONTH)
    rows = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else END
        period = run_period(built, labels, start, end, cfg, 180)
        band = period.scored["band"]
        rows.append(
            {
                "month": str(start.tz_convert("Asia/Shanghai").date()),
                "window": FIXED,
                "n": len(band),
                "critical": int((band == "critical").sum()),
                "alert": int(band.isin(["critical", "high"]).sum()),
            }
        )
        reach = max(args.window) * DAY
        frame = built.frame.loc[
            (built.frame["applied_at"] > start - reach) & (built.frame["applied_at"] <= end)
        ]
        scores = period.fitted.score(frame.loc[:, period.fitted.names].to_numpy(dtype=np.float64))
        for window in args.window:
            critical, alert, n = refreshed_shares(frame["applied_at"], scores, start, end, window)
            rows.append(
                {"month": rows[-1]["month"], "window": window, "n": n, "critical": critical, "alert": alert}
            )
    table = pd.DataFrame(rows)
    for column in ("critical", "alert"):
        shares = table.assign(share=table[column] / table["n"]).pivot(
            index="month", columns="window", values="share"
        )
        pooled = table.groupby("window")[[column, "n"]].sum()
        shares.loc["pooled"] = pooled[column] / pooled["n"]
        print(
            f"{column} share by month (window 0: the shipped fixed cuts; else daily cuts over that many days)"
        )
        print((100 * shares).round(2).to_string())


if __name__ == "__main__":
    main()

"""Volumes, label rates and label delays by month of application, from counts that add up.

The counts are sums, so a training set built on a cluster adds its partitions' counts
and gets what one machine counts over the whole frame.
"""

from __future__ import annotations

import pandas as pd

from duanka.data.config import SHANGHAI

COUNTS = ("applications", "mature", "confirmed")


def month_of(applied_at: pd.Series) -> pd.Series:
    """Calendar month in Beijing time, ``YYYY-MM``."""
    return applied_at.dt.tz_convert(SHANGHAI).dt.strftime("%Y-%m")


def month_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Applications, mature ones and confirmed mules (``label``) by month of ``applied_at``."""
    return (
        frame.assign(month=month_of(frame["applied_at"]))
        .groupby("month")
        .agg(
            applications=("application_id", "size"),
            mature=("label_mature", "sum"),
            confirmed=("label", "sum"),
        )
        .astype("int64")
    )


def add_counts(counts: list[pd.DataFrame]) -> pd.DataFrame:
    """The sum of several :func:`month_counts`, month by month."""
    found = [c for c in counts if len(c)]
    if not found:
        return pd.DataFrame(columns=list(COUNTS), index=pd.Index([], name="month"), dtype="int64")
    return pd.concat(found).groupby(level="month").sum().astype("int64")


def monthly_summary(counts: pd.DataFrame, confirmed: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Counts by month with the label rate and the median days from opening to confirmation.

    Parameters
    ----------
    counts : pandas.DataFrame
        :func:`month_counts` (or :func:`add_counts` of several).
    confirmed : pandas.DataFrame
        ``application_id`` and ``applied_at`` of the applications with a confirmation in ``labels``.
    labels : pandas.DataFrame
        ``application_id`` and ``confirmed_at`` known at the run's ``as_of``; an application
        confirmed twice counts each delay.
    """
    merged = confirmed.merge(labels, on="application_id", how="inner")
    delay = (merged["confirmed_at"] - merged["applied_at"]).dt.total_seconds() / 86_400
    delays = delay.groupby(month_of(merged["applied_at"]).to_numpy()).median()
    summary = counts.copy()
    summary["label_rate"] = summary["confirmed"] / summary["applications"]
    summary["median_label_delay_days"] = delays.reindex(summary.index)
    return summary

"""What became of the decisions: mules among the months whose outcome window has closed, and their rings.

An opening is a mule when a confirmation came within the outcome window
(``Settings.outcome_window_days``) of its application and by the as-of day, as training labels it
(:func:`duanka.features.training_set.add_labels`). Confirmations are the event store's labels and
the case reviewers' "confirmed" dispositions (which the service also feeds to the store, but a
store that has not received them yet must not undercount). A month is matured when the window
of its last day has closed: before that its mule count only grows, and every rate on it reads
too good.

Rings are confirmed mules linked by a shared escort, intermediary, address building, phone or
device (the model's link keys, :data:`duanka.features.registry.LINK_KEYS`): a ring is caught
once any of its members was alerted (:func:`duanka.training.groups.group_catch_rates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.features.registry import LINK_KEYS
from duanka.features.values import DAY_US
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.periods import local_day_numbers, month_keys, month_last_day
from duanka.training.bands import ALERT_BANDS

CONFIRMED = "confirmed"


def end_of_day_us(day: date) -> int:
    """Microseconds (UTC) of the end of Beijing ``day``: what "known by the as-of day" includes."""
    midnight = pd.Timestamp(datetime.combine(day + timedelta(days=1), time()), tz=SHANGHAI)
    return int(midnight.tz_convert("UTC").value // 1_000)


@dataclass(frozen=True)
class Outcomes:
    """The mules among the decided applications, and the matured months.

    Attributes
    ----------
    matured : list of str
        ``YYYY-MM`` of the months with decisions whose outcome window has closed, oldest first.
    mules : pandas.DataFrame
        The decided rows (:data:`~duanka.serving.monitor.sidecar.DECIDED_COLUMNS`) of the mules of
        matured months, with ``month`` and ``alert``.
    """

    matured: list[str]
    mules: pd.DataFrame


def confirmations(ctx: Context) -> pd.DataFrame:
    """``application_id``, ``confirmed_us``: each application's first confirmation known by the as-of day."""
    known_by = end_of_day_us(ctx.as_of)
    labels = ctx.labels
    stored = pd.DataFrame(
        {
            "application_id": labels["application_id"].astype(str).to_numpy(),
            "confirmed_us": pd.to_datetime(labels["confirmed_at"], utc=True)
            .to_numpy(dtype="datetime64[us]")
            .astype(np.int64),
        }
    )
    disposed = ctx.dispositions
    disposed = disposed.loc[disposed["status"] == CONFIRMED]
    reviewed = pd.DataFrame(
        {
            "application_id": disposed["application_id"].astype(str).to_numpy(),
            "confirmed_us": pd.to_datetime(disposed["at"], utc=True, format="ISO8601")
            .to_numpy(dtype="datetime64[us]")
            .astype(np.int64),
        }
    )
    both = pd.concat([stored, reviewed], ignore_index=True)
    both = both.loc[both["confirmed_us"] < known_by]
    return both.groupby("application_id", as_index=False)["confirmed_us"].min()


def outcomes(ctx: Context) -> Outcomes:
    """The matured months and their mules."""
    months = ctx.groups["month"].unique()
    window = timedelta(days=ctx.outcome_window_days)
    matured = sorted(m for m in months if month_last_day(m) + window < ctx.as_of + timedelta(days=1))
    confirmed = confirmations(ctx)
    decided = ctx.sidecar.decided_of(confirmed["application_id"])
    rows = decided.merge(confirmed, on="application_id")
    rows = rows.loc[rows["confirmed_us"] - rows["applied_us"] <= ctx.outcome_window_days * DAY_US]
    rows = rows.assign(
        month=month_keys(local_day_numbers(rows["applied_us"].to_numpy())),
        alert=rows["band"].isin(ALERT_BANDS).to_numpy(),
    )
    return Outcomes(matured, rows.loc[rows["month"].isin(matured)].reset_index(drop=True))


def _components(keys: pd.DataFrame) -> np.ndarray:
    """A ring id per row: rows sharing any non-null key, directly or through others, share one."""
    parent = np.arange(len(keys))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in keys.columns:
        first: dict[str, int] = {}
        for i, value in enumerate(keys[column].to_numpy()):
            if not isinstance(value, str) or not value:
                continue
            if value in first:
                parent[root(i)] = root(first[value])
            else:
                first[value] = i
    return np.array([root(i) for i in range(len(keys))])


def link_keys(ctx: Context, application_ids: list[str]) -> pd.DataFrame:
    """The link keys of ``application_ids`` (index), cached in the sidecar once found."""
    cached = ctx.sidecar.links_of(application_ids)
    wanted = [a for a in application_ids if a not in cached]
    if wanted:
        found = {a: {k: e.get(k) for k in LINK_KEYS} for a, e in ctx.record.events_of(wanted).items()}
        batch = [a for a in wanted if a not in found]
        if batch and ctx.links is not None:
            found |= ctx.links(batch)
        ctx.sidecar.keep_links(found)
        cached |= found
    frame = pd.DataFrame.from_dict(cached, orient="index").reindex(
        index=application_ids, columns=list(LINK_KEYS)
    )
    return frame


def rings(ctx: Context, mules: pd.DataFrame) -> pd.DataFrame:
    """``application_id``, ``applied_at``, ``group_id``, ``scheme``, ``is_mule`` of the mules in rings
    of two or more: the frame :func:`duanka.training.groups.group_catch_rates` reads."""
    if mules.empty:
        return pd.DataFrame(columns=["application_id", "applied_at", "group_id", "scheme", "is_mule"])
    ids = mules["application_id"].tolist()
    ring = _components(link_keys(ctx, ids))
    size = np.bincount(ring, minlength=len(ring))[ring]
    frame = pd.DataFrame(
        {
            "application_id": ids,
            "applied_at": mules["applied_us"].to_numpy(),
            "group_id": np.where(size >= 2, ring.astype(str), None),
            "scheme": "linked",
            "is_mule": 1,
        }
    )
    return frame

"""One chunk of decisions as the sidecar's counts: what each row of the monitoring plan adds up.

Pure: a :class:`~duanka.serving.monitor.record.DecisionChunk`, its fairness groups and the models'
baselines in; rows of the sidecar's tables out (:mod:`duanka.serving.monitor.sidecar`). Counts add,
so counting a record chunk by chunk and counting it at once give the same tables.

- ``models``, ``day_bands``, ``branch_bands``: every decision, the hard rules' (``blocked``)
  included, since each is an opening the alert budget is a share of.
- ``bins``, ``missing``, ``reasons``, ``origin``, ``groups`` and the decided rows: the model's
  decisions only (no hard rule decided them), as the reference counts the openings the model
  scored and the model report leaves the rule's refusals out of its tables.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

import duanka.training as training_room
from duanka.serving.monitor.attributes import DIMENSIONS, OUT_OF_PROVINCE
from duanka.serving.monitor.baselines import Baseline
from duanka.serving.monitor.periods import (
    MONTH,
    WEEK,
    day_keys,
    instants_us,
    local_day_numbers,
    month_keys,
    period_key,
    week_keys,
)
from duanka.serving.monitor.record import DecisionChunk
from duanka.training.bands import ALERT_BANDS
from duanka.training.monitoring import bin_index

SCORE = "score"  # the name the score's bins are kept under, beside the features'
ROWS = ""  # the ``missing`` and ``reasons`` rows that count the rows themselves
UNKNOWN_BRANCH = "unknown"  # a decision recorded before branches were kept
NO_GROUP = "none"  # error_rates' name for a missing group
RESTING = "resting on origin"
OUTSIDERS = "out-of-province alerts"
_CODE_SEPARATORS = re.compile(r"[|,]")  # the answers join codes with "|"; older rows with ","
_ORIGIN_FEATURE = re.compile(r"out_of_province|outside_branch_province|fellow_villagers")


@cache
def origin_codes() -> frozenset[str]:
    """Reason codes whose features read where applicants come from (``training/reasons.toml``).

    An out-of-province applicant's alert "rests on origin" when one of its reasons is one of
    these: the report's plan watches their share of such alerts (section 8, "Out-of-province
    applicants").
    """
    catalogue = Path(training_room.__file__).with_name("reasons.toml")
    with catalogue.open("rb") as handle:
        codes = tomllib.load(handle)["codes"]
    return frozenset(
        code
        for code, spec in codes.items()
        if any(_ORIGIN_FEATURE.search(f) for f in spec.get("features", ()))
    )


def _sizes(frame: pd.DataFrame, keys: Sequence[str], name: str = "n") -> pd.DataFrame:
    return frame.groupby(list(keys), sort=False).size().rename(name).reset_index()


def _bins(
    keys: np.ndarray, booster: str, values: Mapping[str, np.ndarray], baseline: Baseline
) -> pd.DataFrame:
    """Rows per period and reference bin of the score and of each feature of the reference."""
    reference = baseline.reference
    assert reference is not None
    codes, periods = pd.factorize(keys)
    found: dict[str, list[np.ndarray]] = {"period": [], "feature": [], "bin": [], "n": []}
    for name, binned in ((SCORE, reference.score), *reference.features.items()):
        if name not in values:
            continue
        width = len(binned.edges) + 2
        combined = codes * width + bin_index(values[name], binned.edge_array)
        counts = np.bincount(combined, minlength=len(periods) * width).reshape(len(periods), width)
        period, bin_ = np.nonzero(counts)
        found["period"].append(period)
        found["feature"].append(np.full(len(period), name, dtype=object))
        found["bin"].append(bin_)
        found["n"].append(counts[period, bin_])
    # one frame for the whole chunk: a frame per feature costs more than the counting
    return pd.DataFrame(
        {
            "period": np.asarray(periods, dtype=object)[np.concatenate(found["period"])],
            "booster": booster,
            "feature": np.concatenate(found["feature"]),
            "bin": np.concatenate(found["bin"]).astype(np.int64),
            "n": np.concatenate(found["n"]),
        }
    )


def chunk_counts(
    chunk: DecisionChunk,
    names: Sequence[str],
    groups: pd.DataFrame,
    baselines: Mapping[str, Baseline],
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The sidecar rows one chunk of decisions adds.

    Parameters
    ----------
    chunk : DecisionChunk
    names : sequence of str
        The columns of ``chunk.X``.
    groups : pandas.DataFrame
        Each decision's group in every :data:`~duanka.serving.monitor.attributes.DIMENSIONS`,
        row for row (:func:`~duanka.serving.monitor.attributes.group_attributes`).
    baselines : mapping of str to Baseline
        By booster; a model without a reference adds no bins.

    Returns
    -------
    counts : dict of str to pandas.DataFrame
        Rows of each aggregate table, one per key.
    decided : pandas.DataFrame
        One row per decision of the model (:data:`~duanka.serving.monitor.sidecar.DECIDED_COLUMNS`).
    """
    f = chunk.frame
    us = instants_us(f["at"].tolist())
    days = local_day_numbers(us)
    day, week, month = day_keys(days), week_keys(days), month_keys(days)
    bands = f["band"].to_numpy(dtype=object)
    base = pd.DataFrame(
        {
            "booster": f["booster_sha256"].to_numpy(dtype=object),
            "version": f["model_version"].astype(str).to_numpy(dtype=object),
            "day": day,
            "branch": f["branch_id"].fillna(UNKNOWN_BRANCH).to_numpy(dtype=object),
            "band": bands,
        }
    )
    counts = {
        "models": _sizes(base, ["booster", "version", "day"]),
        "day_bands": _sizes(base, ["day", "band"]),
        "branch_bands": _sizes(base, ["day", "branch", "band"]),
    }

    modelled = (f["rule"].fillna("") == "").to_numpy()
    X = chunk.X[modelled]
    alert = np.isin(bands[modelled], ALERT_BANDS)
    periods = {
        WEEK: np.array([period_key(WEEK, w) for w in week[modelled]], dtype=object),
        MONTH: np.array([period_key(MONTH, m) for m in month[modelled]], dtype=object),
    }
    boosters = base["booster"].to_numpy()[modelled]
    score = f["score"].to_numpy(dtype=float)[modelled]

    bins = []
    for booster in pd.unique(boosters):
        baseline = baselines.get(booster)
        if baseline is None or baseline.reference is None:
            continue
        mine = boosters == booster
        values = {SCORE: score[mine], **{n: X[mine, i] for i, n in enumerate(names)}}
        for keys in periods.values():
            bins.append(_bins(keys[mine], booster, values, baseline))
    counts["bins"] = pd.concat(bins, ignore_index=True) if bins else pd.DataFrame()

    missing = []
    isnan = pd.DataFrame(~np.isfinite(X), columns=list(names))
    isnan[ROWS] = True  # the rows themselves: the missing rate's denominator
    for keys in periods.values():
        summed = isnan.groupby(keys, sort=False).sum()
        long = summed.stack().rename("n").reset_index()
        long.columns = ["period", "feature", "n"]
        missing.append(long.loc[long["n"] > 0])
    counts["missing"] = pd.concat(missing, ignore_index=True)

    alert_month = month[modelled][alert]
    codes = f["reason_codes"].fillna("").to_numpy(dtype=object)[modelled][alert]
    listed = pd.DataFrame(
        {"month": alert_month, "code": [sorted(set(filter(None, _CODE_SEPARATORS.split(c)))) for c in codes]}
    ).explode("code")
    reasons = pd.concat(
        [
            pd.DataFrame({"month": alert_month, "code": ROWS}),
            listed.dropna(subset=["code"]),
        ]
    )
    counts["reasons"] = _sizes(reasons, ["month", "code"]) if len(reasons) else pd.DataFrame()

    origin = groups["origin"].to_numpy(dtype=object)[modelled][alert]
    outsider = origin == OUT_OF_PROVINCE
    resting = np.array([bool(origin_codes() & set(_CODE_SEPARATORS.split(c))) for c in codes], dtype=bool)
    counts["origin"] = pd.concat(
        [
            _sizes(pd.DataFrame({"month": alert_month[outsider], "kind": OUTSIDERS}), ["month", "kind"]),
            _sizes(
                pd.DataFrame({"month": alert_month[outsider & resting], "kind": RESTING}), ["month", "kind"]
            ),
        ]
    )

    grouped = groups.loc[modelled].reset_index(drop=True)
    per_group = []
    for dimension in DIMENSIONS:
        frame = pd.DataFrame(
            {
                "month": month[modelled],
                "dimension": dimension,
                "grp": grouped[dimension].fillna(NO_GROUP).astype(str).to_numpy(),
                "alert": alert,
            }
        )
        per_group.append(
            frame.groupby(["month", "dimension", "grp"], sort=False)
            .agg(n=("alert", "size"), alerts=("alert", "sum"))
            .reset_index()
        )
    counts["groups"] = pd.concat(per_group, ignore_index=True)

    decided = pd.DataFrame(
        {
            "application_id": f["application_id"].to_numpy(dtype=object)[modelled],
            "applied_us": us[modelled],
            "band": bands[modelled],
            "age_band": grouped["age band"].to_numpy(dtype=object),
            "origin": grouped["origin"].to_numpy(dtype=object),
            "channel": grouped["channel"].to_numpy(dtype=object),
            "account_type": grouped["account type"].to_numpy(dtype=object),
            "gender": grouped["gender"].to_numpy(dtype=object),
        }
    )
    return counts, decided

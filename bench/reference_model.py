"""An independent reference model: a yardstick for duanka's scores, not the product.

    .venv/bin/python bench/reference_model.py --data /tmp/refbank --from 2025-01-01 --to 2025-07-01

It reads the raw input-contract CSVs a bank (or ``duanka generate``) writes, builds about
twenty obvious hand-made features with pandas and numpy, and fits a small LightGBM. It
deliberately imports nothing from the project's ``features``, ``training`` or ``serving``
packages, so that a bug shared by those packages cannot also hide in the yardstick.

Point in time
-------------
Every feature of an application applied at ``t`` uses only applications applied strictly
before ``t`` and confirmations whose ``confirmed_at`` is strictly before ``t``. Rows with the
very same ``applied_at`` do not see each other.

Features (one column each, all float64; NaN where the key or the value is absent)
----------------------------------------------------------------------------------
- ``escort_30d``, ``building_30d``, ``phone_block_30d``, ``device_30d``,
  ``intermediary_30d``, ``applicant_30d``: earlier applications in ``[t - 30 days, t)``
  sharing the escort, the address building (see below), the first 7 phone digits, the
  device, the intermediary, or the ID number. NaN when the application has no such key.
- ``escort_mules_seen``, ``building_mules_seen``: earlier applications of the same escort /
  building (any time back) confirmed as mules before ``t``.
- ``staff_apps_90d``, ``staff_tampered_90d``, ``staff_unverified_corp_90d``: the staff
  member's earlier applications in ``[t - 90 days, t)``: all of them, those with
  ``photo_tampered`` true, and corporate ones with ``onsite_verified`` false.
- ``age`` (whole years, from ID characters 7-14 against the Asia/Shanghai application day),
  ``hour`` (Asia/Shanghai), ``channel`` (counter 0, mobile 1, agent 2), ``corporate``,
  ``bundle`` (u_shield + mobile_banking + payment_binding), ``phone_tenure_days``,
  ``company_age_days`` (NaN for personal accounts), ``photo_tampered`` and
  ``onsite_verified`` (NaN for personal accounts).

The origin of the applicant (ID region against the branch) is left out on purpose.

Address building (crude, on purpose): NFKC (full-width digits to ASCII), ``號`` to ``号``,
whitespace dropped, the text cut after the first ``号`` (the street number: units, floors,
rooms and named buildings after it are dropped), then a leading ``中国``, ``...省`` and
``...市`` dropped so ``广东省广州市天河区X路1号`` and ``天河区X路1号`` agree. A text with no
``号`` keeps its whole normalised form. This is a street-number key, coarser than duanka's
building key; an estate with many towers is one key here.
"""

from __future__ import annotations

import argparse
import math
import re
import time
import unicodedata
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

SHANGHAI = "Asia/Shanghai"
DAY_NS = 86_400 * 10**9

FEATURES = [
    "escort_30d",
    "building_30d",
    "phone_block_30d",
    "device_30d",
    "intermediary_30d",
    "applicant_30d",
    "escort_mules_seen",
    "building_mules_seen",
    "staff_apps_90d",
    "staff_tampered_90d",
    "staff_unverified_corp_90d",
    "age",
    "hour",
    "channel",
    "corporate",
    "bundle",
    "phone_tenure_days",
    "company_age_days",
    "photo_tampered",
    "onsite_verified",
]

# An explicit offset at the end of an ISO 8601 text (``Z``, ``+08:00``, ``+0800``, ``+08``).
_OFFSET = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
# Province and prefecture-level city at the front of an address; the class excludes 区 and 县
# so a road such as 市场路 after a district is never taken for a city.
_ADDRESS_PREFIX = re.compile(r"^(?:中国)?(?:[^省市区县]{2,7}?省)?(?:[^省市区县]{2,7}?市)?")
_CHANNELS = {"counter": 0.0, "mobile": 1.0, "agent": 2.0}
_BOOLEANS = {"true": 1.0, "1": 1.0, "false": 0.0, "0": 0.0}


# --------------------------------------------------------------------------------------------
# Reading the bank
# --------------------------------------------------------------------------------------------


def _parse_times(text: pd.Series) -> pd.Series:
    """Parse contract timestamps to tz-aware UTC.

    Parameters
    ----------
    text : pd.Series
        ISO 8601 texts; with an offset they are taken as is, without one as Asia/Shanghai.

    Returns
    -------
    pd.Series
        ``datetime64[ns, UTC]``; NaT where a text does not parse.
    """
    text = text.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    # Mixed offset and naive texts cannot go through one to_datetime call: utc=True would
    # read a naive text as UTC, while the contract says naive is Asia/Shanghai.
    has_offset = text.str.contains(_OFFSET, na=False)
    if has_offset.any():
        out[has_offset] = pd.to_datetime(
            text[has_offset], format="ISO8601", utc=True, errors="coerce"
        ).astype("datetime64[ns, UTC]")
    naive = ~has_offset & text.notna()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = (
            local.dt.tz_localize(SHANGHAI, ambiguous="NaT", nonexistent="NaT")
            .dt.tz_convert("UTC")
            .astype("datetime64[ns, UTC]")
        )
    return out


def load_bank(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a bank's applications and labels from its contract CSVs.

    Parameters
    ----------
    folder : Path
        Folder holding ``applications.csv`` and ``labels.csv`` (as ``duanka generate`` writes).

    Returns
    -------
    applications : pd.DataFrame
        One row per application, sorted by ``applied_at`` (a fresh RangeIndex). ``applied_at``
        is tz-aware UTC; every other column stays text, empty cells are NaN. Rows whose
        ``applied_at`` does not parse are dropped, and a repeated ``application_id`` keeps its
        first row, as duanka's ingest would.
    labels : pd.DataFrame
        ``application_id``, ``confirmed_at`` (tz-aware UTC), ``source``; unparseable times dropped.
    """
    folder = Path(folder)
    # Everything as text first, so leading zeros and a trailing X in IDs survive.
    apps = pd.read_csv(folder / "applications.csv", dtype=str, keep_default_na=False, na_values=[""])
    apps["applied_at"] = _parse_times(apps["applied_at"])
    apps = apps[apps["applied_at"].notna()].drop_duplicates("application_id", keep="first")
    apps = apps.sort_values("applied_at", kind="stable").reset_index(drop=True)

    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False, na_values=[""])
    labels["confirmed_at"] = _parse_times(labels["confirmed_at"])
    labels = labels[labels["confirmed_at"].notna()].reset_index(drop=True)
    return apps, labels


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def building_key(address: str) -> str:
    """Crude building key: the normalised address up to and including its first ``号``.

    Parameters
    ----------
    address : str
        Raw address text.

    Returns
    -------
    str
        E.g. ``广东省广州市天河区新港路３２４號万科城25栋`` gives ``天河区新港路324号``.
    """
    text = unicodedata.normalize("NFKC", address).replace("號", "号")
    text = re.sub(r"\s+", "", text)
    cut = text.find("号")
    if cut >= 0:
        text = text[: cut + 1]
    stripped = _ADDRESS_PREFIX.sub("", text)
    # Keep the whole text when the prefix was all there was (e.g. 广东省广州市), so incomplete
    # addresses do not all collapse onto one empty key.
    return stripped or text


def _past_counts(
    event_key: np.ndarray,
    event_time: np.ndarray,
    query_key: np.ndarray,
    query_time: np.ndarray,
    window_ns: int | None,
) -> np.ndarray:
    """Count events with the query's key and a time in ``[t - window, t)``.

    Parameters
    ----------
    event_key, query_key : np.ndarray
        Integer codes from one shared factorisation; -1 means no key.
    event_time, query_time : np.ndarray
        int64 nanoseconds.
    window_ns : int or None
        Window length; None counts everything strictly before ``t``.

    Returns
    -------
    np.ndarray
        float64 counts; NaN where the query has no key.

    Notes
    -----
    Events are sorted once on a composite ``key * M + rank(time)`` where the rank runs over
    the distinct event times. Two binary searches per query then give the window's ends, all
    vectorised, with no per-group Python loop. Ranks instead of raw nanoseconds keep the
    composite far below int64's limit, and make the comparison exact (``time < t``), so rows
    sharing a timestamp never see each other.
    """
    keep = event_key >= 0
    event_key = event_key[keep].astype(np.int64)
    event_time = event_time[keep]
    result = np.full(len(query_key), np.nan)
    has_key = query_key >= 0
    if not has_key.any():
        return result
    times = np.unique(event_time)
    m = np.int64(len(times) + 1)
    composite = np.sort(event_key * m + np.searchsorted(times, event_time, side="left"))
    qk = query_key[has_key].astype(np.int64)
    qt = query_time[has_key]
    # rank(event) < searchsorted(times, t, "left")  <=>  event_time < t
    hi = qk * m + np.searchsorted(times, qt, side="left")
    lo = qk * m
    if window_ns is not None:
        lo = lo + np.searchsorted(times, qt - window_ns, side="left")
    result[has_key] = np.searchsorted(composite, hi, side="left") - np.searchsorted(
        composite, lo, side="left"
    )
    return result


def _first_confirmation(applications: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Earliest ``confirmed_at`` of each application (NaT if none), aligned to ``applications``.

    Parameters
    ----------
    applications, labels : pd.DataFrame
        As :func:`load_bank` returns.

    Returns
    -------
    pd.Series
        ``datetime64[ns, UTC]`` on ``applications.index``.
    """
    first = labels.groupby("application_id")["confirmed_at"].min()
    # reindex rather than Series.map: map with an empty mapper of datetimes fails in pandas.
    conf = first.reindex(applications["application_id"].to_numpy())
    conf = pd.Series(conf.to_numpy(), index=applications.index)
    return pd.to_datetime(conf, utc=True).astype("datetime64[ns, UTC]")


def _flag(text: pd.Series) -> pd.Series:
    """Contract booleans (``true``/``false``/``1``/``0``, any case) as 1.0/0.0, else NaN."""
    return text.str.strip().str.lower().map(_BOOLEANS).astype("float64")


def reference_features(applications: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for every application.

    Parameters
    ----------
    applications : pd.DataFrame
        As :func:`load_bank` returns (``applied_at`` tz-aware UTC, other columns text).
    labels : pd.DataFrame
        ``application_id`` and ``confirmed_at`` (tz-aware UTC).

    Returns
    -------
    pd.DataFrame
        Index aligned to ``applications``, the columns of ``FEATURES`` (float64). Each row uses
        only applications applied strictly before it and confirmations strictly before it.
    """
    apps = applications
    t = apps["applied_at"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    t_ns = t.astype("int64").to_numpy()
    out = pd.DataFrame(index=apps.index)

    def codes(values: pd.Series) -> np.ndarray:
        return pd.factorize(values, use_na_sentinel=True)[0]

    keys = {
        "escort": codes(apps["escort_id"]),
        "building": codes(apps["address"].map(building_key, na_action="ignore")),
        "phone_block": codes(apps["phone"].str.strip().str[:7]),
        "device": codes(apps["device_id"]),
        "intermediary": codes(apps["intermediary_id"]),
        # x and X are the same check character.
        "applicant": codes(apps["id_number"].str.strip().str.upper()),
    }
    for name, k in keys.items():
        out[f"{name}_30d"] = _past_counts(k, t_ns, k, t_ns, 30 * DAY_NS)

    # Earliest confirmation per application; a mule becomes visible to others only once both
    # its application and its confirmation lie strictly before t, hence the max of the two.
    conf = _first_confirmation(apps, labels)
    confirmed = conf.notna().to_numpy()
    conf_ns = conf[confirmed].dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    seen_at = np.maximum(t_ns[confirmed], conf_ns)
    for name in ("escort", "building"):
        k = keys[name]
        out[f"{name}_mules_seen"] = _past_counts(k[confirmed], seen_at, k, t_ns, None)

    staff = codes(apps["staff_id"])
    tampered = (_flag(apps["photo_tampered"]) == 1).to_numpy()
    corporate = (apps["account_type"].str.strip().str.lower() == "corporate").to_numpy()
    onsite = _flag(apps["onsite_verified"])
    unverified_corp = corporate & (onsite == 0).to_numpy()
    window = 90 * DAY_NS
    out["staff_apps_90d"] = _past_counts(staff, t_ns, staff, t_ns, window)
    out["staff_tampered_90d"] = _past_counts(staff[tampered], t_ns[tampered], staff, t_ns, window)
    out["staff_unverified_corp_90d"] = _past_counts(
        staff[unverified_corp], t_ns[unverified_corp], staff, t_ns, window
    )

    # Age and hour on the Asia/Shanghai calendar, where the applicant stood.
    local = t.dt.tz_convert(SHANGHAI)
    birth = pd.to_datetime(apps["id_number"].str.strip().str[6:14], format="%Y%m%d", errors="coerce")
    before_birthday = (local.dt.month < birth.dt.month) | (
        (local.dt.month == birth.dt.month) & (local.dt.day < birth.dt.day)
    )
    out["age"] = (local.dt.year - birth.dt.year - before_birthday.astype("int64")).astype("float64")
    out.loc[birth.isna(), "age"] = np.nan
    out["hour"] = local.dt.hour.astype("float64")

    out["channel"] = apps["channel"].str.strip().str.lower().map(_CHANNELS).astype("float64")
    out["corporate"] = corporate.astype("float64")
    out["bundle"] = sum(_flag(apps[c]).fillna(0) for c in ("u_shield", "mobile_banking", "payment_binding"))
    out["phone_tenure_days"] = pd.to_numeric(apps["phone_tenure_days"], errors="coerce").astype("float64")
    company_age = pd.to_numeric(apps["company_age_days"], errors="coerce").astype("float64")
    out["company_age_days"] = company_age.where(corporate, np.nan)
    out["photo_tampered"] = _flag(apps["photo_tampered"])
    out["onsite_verified"] = onsite.where(corporate, np.nan)
    return out[FEATURES].astype("float64")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def outcome_labels(
    applications: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp, outcome_window_days: int
) -> np.ndarray:
    """Labels known at ``as_of``: a confirmation by then, within the window of the application.

    Parameters
    ----------
    applications, labels : pd.DataFrame
        As :func:`load_bank` returns.
    as_of : pd.Timestamp
        tz-aware; confirmations with ``confirmed_at <= as_of`` count.
    outcome_window_days : int
        Days after ``applied_at`` within which a confirmation makes a positive.

    Returns
    -------
    np.ndarray
        0/1 int array aligned to ``applications``.
    """
    known = labels[labels["confirmed_at"] <= as_of]
    conf = _first_confirmation(applications, known)
    delay = conf - applications["applied_at"]
    positive = conf.notna() & (delay <= pd.Timedelta(days=outcome_window_days))
    return positive.to_numpy().astype(np.int64)


class ReferenceModel:
    """A small seeded LightGBM on :func:`reference_features`, sklearn-style.

    Parameters
    ----------
    seed : int
        Seeds the negative downsampling and LightGBM.
    outcome_window_days : int
        A confirmation within this many days of the application makes a positive.
    """

    def __init__(self, seed: int = 0, outcome_window_days: int = 180) -> None:
        self.seed = seed
        self.outcome_window_days = outcome_window_days
        self.params: dict[str, object] = {
            "objective": "binary",
            "num_leaves": 15,
            "learning_rate": 0.05,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 1.0,
            "seed": seed,
            "num_threads": 2,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        self.num_boost_round = 200
        self.negative_rate = 0.2
        self.booster_: lgb.Booster | None = None
        self.prior_: float | None = None
        self.n_train_: int = 0
        self.n_positive_: int = 0

    def fit(
        self,
        features: pd.DataFrame,
        applications: pd.DataFrame,
        labels: pd.DataFrame,
        as_of: pd.Timestamp,
    ) -> ReferenceModel:
        """Train on every application applied before ``as_of`` with the labels known then.

        Parameters
        ----------
        features : pd.DataFrame
            :func:`reference_features` output, index aligned to ``applications``.
        applications, labels : pd.DataFrame
            As :func:`load_bank` returns.
        as_of : pd.Timestamp
            The training cut; naive means Asia/Shanghai. No maturity filter: a recent
            application with no confirmation yet is a negative, as it would be on that day.

        Returns
        -------
        ReferenceModel
            self.
        """
        as_of = _aware(as_of)
        train = (applications["applied_at"] < as_of).to_numpy()
        if not train.any():
            raise ValueError(f"no application applied before {as_of}")
        y_all = outcome_labels(applications, labels, as_of, self.outcome_window_days)
        X = features.loc[applications.index].to_numpy(dtype=np.float64)[train]
        y = y_all[train]
        # Negatives kept at 20 % and weighted 5: the same expected loss, a fifth of the rows.
        rng = np.random.default_rng(self.seed)
        keep = (y == 1) | (rng.random(len(y)) < self.negative_rate)
        weight = np.where(y == 1, 1.0, 1.0 / self.negative_rate)[keep]
        self.n_train_, self.n_positive_ = int(train.sum()), int(y.sum())
        if y[keep].min() == y[keep].max():
            # One class only (e.g. an as-of date before the first confirmation): a tree cannot
            # learn anything, so score everyone with the observed rate.
            self.booster_, self.prior_ = None, float(y.mean())
            return self
        data = lgb.Dataset(X[keep], label=y[keep], weight=weight, feature_name=list(features.columns))
        self.booster_ = lgb.train(self.params, data, num_boost_round=self.num_boost_round)
        self.prior_ = None
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Scores as an ``(n, 2)`` array: column 1 is the mule probability.

        Parameters
        ----------
        features : pd.DataFrame
            Same columns as at fit.

        Returns
        -------
        np.ndarray
            ``[[1 - p, p], ...]``.
        """
        if self.booster_ is None and self.prior_ is None:
            raise RuntimeError("ReferenceModel is not fitted")
        if self.booster_ is None:
            p = np.full(len(features), self.prior_, dtype=np.float64)
        else:
            p = self.booster_.predict(features.to_numpy(dtype=np.float64))
        return np.column_stack([1.0 - p, p])


# --------------------------------------------------------------------------------------------
# Backtest
# --------------------------------------------------------------------------------------------


def _aware(ts: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp as tz-aware UTC; naive means Asia/Shanghai, as in the contract."""
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        ts = ts.tz_localize(SHANGHAI)
    return ts.tz_convert("UTC")


def backtest_reference(
    folder: Path,
    starts: list[pd.Timestamp],
    end: pd.Timestamp,
    outcome_window_days: int = 180,
    seed: int = 0,
) -> pd.DataFrame:
    """Refit at each period's start and score that period's applications.

    Parameters
    ----------
    folder : Path
        A bank folder (see :func:`load_bank`).
    starts : list of pd.Timestamp
        Period starts, increasing; period ``i`` is ``[starts[i], starts[i+1])``, the last one
        ``[starts[-1], end)``. Naive means Asia/Shanghai.
    end : pd.Timestamp
        End of the last period (exclusive).
    outcome_window_days, seed : int
        Passed to :class:`ReferenceModel`.

    Returns
    -------
    pd.DataFrame
        One row per scored application: ``application_id``, ``applied_at`` (UTC), ``period``
        (``str`` of the period's start as given), ``score``.
    """
    apps, labels = load_bank(folder)
    # Features are point in time, so computing them once over the whole bank is the same as
    # recomputing them at every cut.
    feats = reference_features(apps, labels)
    bounds = [_aware(s) for s in starts] + [_aware(end)]
    frames = []
    for i, start in enumerate(starts):
        lo, hi = bounds[i], bounds[i + 1]
        scored = ((apps["applied_at"] >= lo) & (apps["applied_at"] < hi)).to_numpy()
        model = ReferenceModel(seed=seed, outcome_window_days=outcome_window_days)
        model.fit(feats, apps, labels, as_of=lo)
        frames.append(
            pd.DataFrame(
                {
                    "application_id": apps.loc[scored, "application_id"].to_numpy(),
                    "applied_at": apps.loc[scored, "applied_at"].to_numpy(),
                    "period": str(start),
                    "score": model.predict_proba(feats[scored])[:, 1],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["application_id", "applied_at", "period", "score"])
    return pd.concat(frames, ignore_index=True)


def recall_at(y: np.ndarray, score: np.ndarray, alert_rate: float = 0.01) -> float:
    """Share of the positives among the top ``alert_rate`` of scores (ties broken by order).

    Parameters
    ----------
    y : np.ndarray
        0/1 truth.
    score : np.ndarray
        Scores, higher means riskier.
    alert_rate : float
        Share of applications alerted; at least one.

    Returns
    -------
    float
        Recall, NaN when there is no positive.
    """
    if y.sum() == 0:
        return float("nan")
    k = max(1, math.ceil(alert_rate * len(y)))
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].sum() / y.sum())


def main() -> None:
    """Monthly backtest of the reference model, judged against truth.csv."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="bank folder (duanka generate --out)")
    parser.add_argument("--from", dest="start", required=True, help="first period start, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="end of the last period, YYYY-MM-DD")
    parser.add_argument("--outcome-window-days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    first = pd.Timestamp(args.start)
    # Calendar months; a --from inside a month makes the first period run to the next month start.
    starts = [first, *[s for s in pd.date_range(first, args.end, freq="MS", inclusive="left") if s > first]]
    t0 = time.perf_counter()
    scores = backtest_reference(
        args.data, starts, pd.Timestamp(args.end), args.outcome_window_days, args.seed
    )
    elapsed = time.perf_counter() - t0
    truth = pd.read_csv(args.data / "truth.csv", dtype={"application_id": str, "is_mule": int})
    scores = scores.merge(truth[["application_id", "is_mule"]], on="application_id", how="left")
    scores["is_mule"] = scores["is_mule"].fillna(0).astype(int)

    print(f"{'period':<26} {'apps':>8} {'mules':>6} {'recall@1%':>10} {'PR-AUC':>8}")
    for period, g in scores.groupby("period", sort=False):
        y, s = g["is_mule"].to_numpy(), g["score"].to_numpy()
        ap = average_precision_score(y, s) if y.any() else float("nan")
        print(f"{period:<26} {len(g):>8,} {int(y.sum()):>6} {recall_at(y, s):>10.3f} {ap:>8.3f}")
    print(f"backtest took {elapsed:.1f} s")


if __name__ == "__main__":
    main()

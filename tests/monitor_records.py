"""Synthetic decision records for the monitoring's tests: a stable bank, and one that drifts.

Twelve weeks from Monday 2025-01-06 of :data:`PER_DAY` decisions a day at :data:`BRANCHES`
branches, recorded through :class:`duanka.serving.audit.DecisionLog` as the service records them
(each answer with its model feature vector and the prepared application). Everything is laid out
so that a stable record is stable by construction, not by luck of a seed:

- each branch runs through the same band cycle (:data:`CYCLE` decisions: one critical, three high,
  six medium), offset per branch so that the day's criticals spread over days: every band sits
  at its budget overall, per branch and per group;
- a branch's applicants share their age band, channel, account type, origin and gender, so every
  group has the same false-positive rate;
- mules are the critical decision of each cycle, one of its three highs and two of its lows,
  confirmed five days after their application;
- the features are seeded normal draws from one distribution every week, two of them missing
  one time in ten; the reference is another draw from the same distribution.

:func:`build` writes the record; with ``drift=True`` the last week has one branch's critical share
jump to one in five and one feature shifted by three standard deviations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog, DecisionRow, iso_utc
from duanka.serving.monitor.baselines import Baseline
from duanka.serving.monitor.engine import Monitoring, MonitorInputs, run_monitoring
from duanka.training.monitoring_reference import MonitoringReference, reference_of

CHAIN_KEY = b"monitor-test-chain-key-not-a-secret-000"
START = date(2025, 1, 6)  # a Monday
WEEKS = 12
PER_DAY = 100
BRANCHES = 10
CYCLE = 200
BOOSTER = "b" * 64
VERSION = "7"
DRIFTING_BRANCH = "B07"
DRIFTING_FEATURE = "phone_tenure_days"
OFTEN_MISSING = ("company_age_days", "onsite_verified")
AS_OF = START + timedelta(weeks=WEEKS) - timedelta(days=1)  # the Sunday the record ends on
OUTCOME_WINDOW_DAYS = 30
PROVINCES = ("44", "51")
# What the evidence model's test months promised at each band (value, low, high): the record's
# figures (recall 1/4, 2/4, 2/4; precision 1, 1/2, 1/5) sit inside.
EXPECTED = {
    "recall critical": (0.25, 0.10, 0.40),
    "recall alert": (0.50, 0.35, 0.65),
    "recall medium+": (0.50, 0.35, 0.65),
    "precision critical": (1.0, 0.8, 1.0),
    "precision alert": (0.5, 0.35, 0.65),
    "precision medium+": (0.2, 0.12, 0.28),
}


@dataclass(frozen=True)
class Built:
    """A record written, and what it was built from.

    Attributes
    ----------
    path : Path
        The decision record.
    frame : pandas.DataFrame
        One row per decision: ``application_id``, ``applied_at``, ``day``, ``branch``, ``band``,
        ``mule``, ``score``.
    X : numpy.ndarray
        The feature vectors recorded, row for row, :data:`MODEL_FEATURES` columns.
    labels : pandas.DataFrame
        ``application_id``, ``confirmed_at`` of the mules.
    """

    path: Path
    frame: pd.DataFrame
    X: np.ndarray
    labels: pd.DataFrame


def _features(n: int, branch: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(MODEL_FEATURES)))
    column = {name: i for i, name in enumerate(MODEL_FEATURES)}
    for name in OFTEN_MISSING:
        X[rng.random(n) < 0.1, column[name]] = np.nan
    # the groups the fairness rows read from the features: one per branch
    X[:, column["applicant_age"]] = 22 + 10 * (branch % 5)
    X[:, column["channel"]] = branch % 3
    X[:, column["corporate"]] = (branch % 4 == 0).astype(float)
    return X


def reference_rows(seed: int = 99, rows: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """The reference's feature vectors and scores: another draw of the record's distribution."""
    branch = np.arange(rows) % BRANCHES
    return _features(rows, branch, seed), np.random.default_rng(seed + 1).uniform(size=rows)


def reference() -> MonitoringReference:
    """The model's reference, binned from :func:`reference_rows`."""
    X, scores = reference_rows()
    return reference_of(X, scores, MODEL_FEATURES, ("2024-11-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"))


def baseline(with_reference: bool = True) -> Baseline:
    """The record's model: its reference (unless told otherwise) and its tested figures."""
    return Baseline(BOOSTER, VERSION, reference() if with_reference else None, dict(EXPECTED))


def decisions(weeks: int = WEEKS, *, drift: bool = False, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """The decisions of the first ``weeks`` weeks and their feature vectors."""
    n = weeks * 7 * PER_DAY
    i = np.arange(n)
    branch = i % BRANCHES
    j = i // BRANCHES  # the branch's own decision count
    r = (j + branch * (CYCLE // BRANCHES)) % CYCLE
    band = np.select([r == 0, r <= 3, r <= 9], ["critical", "high", "medium"], "low").astype(object)
    mule = (r <= 1) | (r == 50) | (r == 150)
    day = i // PER_DAY
    # branches open from 09:00 to 17:00 Beijing time (01:00 to 09:00 UTC)
    applied = [
        datetime(START.year, START.month, START.day, 1, tzinfo=UTC) + timedelta(days=int(d), minutes=int(m))
        for d, m in zip(day, (i % PER_DAY) * 480 // PER_DAY, strict=True)
    ]
    X = _features(n, branch, seed)
    score = np.random.default_rng(seed + 1).uniform(size=n)
    if drift:
        last = day >= (weeks - 1) * 7
        hot = last & (branch == int(DRIFTING_BRANCH[1:])) & (j % 5 == 0)
        band[hot] = "critical"
        X[last, MODEL_FEATURES.index(DRIFTING_FEATURE)] += 3.0
    frame = pd.DataFrame(
        {
            "application_id": [f"A{k:07d}" for k in i],
            "applied_at": applied,
            "day": day,
            "branch": [f"B{b:02d}" for b in branch],
            "branch_number": branch,
            "band": band,
            "mule": mule,
            "score": score,
        }
    )
    return frame, X


def _reasons(band: str, branch: int) -> list[str]:
    codes = {"critical": ["ESC_VELOCITY", "NIGHT"], "high": ["NIGHT", "BUNDLE"], "medium": ["NIGHT"]}.get(
        band, []
    )
    if band in ("critical", "high") and branch % 2:
        codes = [*codes, "ADDR_FAR_FROM_BRANCH"]  # an origin reason on every out-of-province alert
    return codes


def _event(row: pd.Series) -> dict:
    """The prepared application the service stores with its answer (pseudonymised fields only)."""
    b = int(row["branch_number"])
    return {
        "application_id": row["application_id"],
        "applied_at": row["applied_at"],
        "branch_id": row["branch"],
        "branch_province": PROVINCES[0],
        "home_province": PROVINCES[b % 2],
        "channel": ("counter", "mobile", "agent")[b % 3],
        "gender": "FM"[(b // 2) % 2],
        "escort_key": f"esc{int(row['day']) // 7:04d}" if row["mule"] and b < 4 else None,
        "address_key": hashlib.sha256(row["application_id"].encode()).hexdigest()[:32],
    }


def write(path: Path, frame: pd.DataFrame, X: np.ndarray) -> None:
    """Append ``frame``'s decisions to the record at ``path`` as the service records them."""
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        for start in range(0, len(frame), 2_000):
            rows, answers = [], {}
            for k in range(start, min(start + 2_000, len(frame))):
                row = frame.iloc[k]
                at = iso_utc(row["applied_at"])
                codes = _reasons(row["band"], int(row["branch_number"]))
                rows.append(
                    DecisionRow(
                        request_id=f"r{k}",
                        application_id=row["application_id"],
                        key_id="k1",
                        decided_at=at,
                        model_name="duanka",
                        model_version=VERSION,
                        booster_sha256=BOOSTER,
                        score=float(row["score"]),
                        band=row["band"],
                        reason_codes="|".join(codes),
                        latency_ms=1.0,
                        replayed=False,
                        branch_id=row["branch"],
                        applied_at=at,
                    )
                )
                response = {
                    "application_id": row["application_id"],
                    "score": float(row["score"]),
                    "band": row["band"],
                    "reasons": [{"code": c} for c in codes],
                    "features": {
                        n: (None if np.isnan(v) else float(v))
                        for n, v in zip(MODEL_FEATURES, X[k], strict=True)
                    },
                }
                answers[row["application_id"]] = ("d" * 64, response, _event(row))
            log.record(rows, answers)


def dispose(path: Path, frame: pd.DataFrame, older_than_days: int = 20) -> None:
    """Reviewers' dispositions of every referred case decided ``older_than_days`` before the record's
    end: mules confirmed, the others cleared, each dated three days after its referral."""
    end = frame["applied_at"].max()
    referred = frame.loc[
        frame["band"].isin(["critical", "high"])
        & (frame["applied_at"] < end - timedelta(days=older_than_days))
    ]
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        for row in referred.itertuples():
            at = iso_utc(row.applied_at + timedelta(days=3))
            with mock.patch("duanka.serving.audit.utc_now", return_value=at):
                log.event(
                    "case_disposed",
                    {
                        "application_id": row.application_id,
                        "branch_id": row.branch,
                        "status": "confirmed" if row.mule else "cleared",
                        "note": "reviewed the file, nothing more",
                        "label": None,
                        "ring_of": None,
                    },
                    key_id="reviewer1",
                    request_id=f"q{row.Index}",
                )


def labels(frame: pd.DataFrame) -> pd.DataFrame:
    """The event store's confirmations of the mules: five days after each application."""
    mules = frame.loc[frame["mule"]]
    return pd.DataFrame(
        {
            "application_id": mules["application_id"].to_numpy(),
            "confirmed_at": pd.to_datetime(mules["applied_at"], utc=True) + pd.Timedelta(days=5),
        }
    )


def build(path: Path, *, drift: bool = False, weeks: int = WEEKS, disposed: bool = True) -> Built:
    """Write a record of ``weeks`` weeks at ``path``."""
    frame, X = decisions(weeks, drift=drift)
    write(path, frame, X)
    if disposed:
        dispose(path, frame)
    return Built(path, frame, X, labels(frame))


def monitored(built: Built, folder: Path, *, with_reference: bool = True) -> Monitoring:
    """The monitoring of ``built`` as of its last day, with a new sidecar in ``folder``."""
    fixed = baseline(with_reference)
    inputs = MonitorInputs(
        record=built.path,
        sidecar=folder / "monitor.db",
        resolve=lambda booster, version: fixed,
        outcome_window_days=OUTCOME_WINDOW_DAYS,
        labels=lambda: built.labels,
    )
    return run_monitoring(inputs, as_of=AS_OF)

"""Out-of-time split: train on the oldest mature months, validate on the next, test on the latest.

Only applications whose outcome window has closed by the as-of date (mature) take
part; the boundaries are calendar offsets back from the maturity cut-off, so the
test months are always the most recent ones whose labels can be trusted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

TRAIN, VALID, TEST = "train", "valid", "test"


@dataclass(frozen=True)
class TimeSplit:
    """Half-open intervals ``[start, end)`` of ``applied_at`` (UTC) for each part."""

    train_start: pd.Timestamp
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    @classmethod
    def before_maturity(
        cls,
        as_of: pd.Timestamp,
        *,
        outcome_window_days: int,
        valid_months: int = 2,
        test_months: int = 2,
        train_months: int | None = None,
    ) -> TimeSplit:
        """Place the split against the maturity cut-off ``as_of - outcome window``.

        Parameters
        ----------
        as_of : pd.Timestamp
            tz-aware; nothing after it is known.
        outcome_window_days : int
            Applications younger than this at ``as_of`` have no mature label.
        valid_months, test_months : int
            Lengths of the validation and out-of-time test periods.
        train_months : int, optional
            Length of the training period; all earlier mature history when ``None``.
        """
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        if min(valid_months, test_months) < 1 or (train_months is not None and train_months < 1):
            raise ValueError("every period needs at least one month")
        test_end = as_of - pd.Timedelta(days=outcome_window_days)
        test_start = test_end - pd.DateOffset(months=test_months)
        valid_start = test_start - pd.DateOffset(months=valid_months)
        train_start = (
            pd.Timestamp.min.tz_localize("UTC")
            if train_months is None
            else valid_start - pd.DateOffset(months=train_months)
        )
        return cls(train_start, valid_start, test_start, test_end)

    def assign(self, applied_at: pd.Series) -> pd.Series:
        """Name the part of each application (``None`` outside every part)."""
        conditions = [
            (applied_at >= self.train_start) & (applied_at < self.valid_start),
            (applied_at >= self.valid_start) & (applied_at < self.test_start),
            (applied_at >= self.test_start) & (applied_at < self.test_end),
        ]
        part = np.select(conditions, [TRAIN, VALID, TEST], default=None)
        return pd.Series(part, index=applied_at.index, dtype="object")

    def describe(self) -> dict[str, str]:
        return {k: ("-inf" if v.year < 1700 else v.isoformat()) for k, v in asdict(self).items()}

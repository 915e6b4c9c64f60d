"""Monthly volumes, label rates and delays: counts add up across partitions; delays are medians."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duanka.training.monthly import add_counts, month_counts, monthly_summary


def _frame() -> pd.DataFrame:
    # 2024-01-31 20:00 UTC is 2024-02-01 04:00 in Beijing: months are Beijing months
    at = pd.to_datetime(
        [
            "2024-01-10T00:00Z",
            "2024-01-31T20:00Z",
            "2024-02-03T00:00Z",
            "2024-02-20T00:00Z",
            "2024-03-01T00:00Z",
        ]
    )
    return pd.DataFrame(
        {
            "application_id": ["a", "b", "c", "d", "e"],
            "applied_at": at,
            "label": np.array([1, 0, 1, 0, 0], dtype=np.int8),
            "label_mature": [True, True, True, False, False],
        }
    )


def test_counts_are_by_beijing_month_and_add_up_across_partitions():
    frame = _frame()
    whole = month_counts(frame)
    assert whole.to_dict("index") == {
        "2024-01": {"applications": 1, "mature": 1, "confirmed": 1},
        "2024-02": {"applications": 3, "mature": 2, "confirmed": 1},
        "2024-03": {"applications": 1, "mature": 0, "confirmed": 0},
    }
    pieces = [
        month_counts(frame.iloc[[0, 3]]),
        month_counts(frame.iloc[[1, 2, 4]]),
        month_counts(frame.iloc[[]]),
    ]
    pd.testing.assert_frame_equal(add_counts(pieces), whole)


def test_delays_are_medians_by_month_and_a_second_confirmation_counts_too():
    frame = _frame()
    labels = pd.DataFrame(
        {
            "application_id": ["a", "c", "c", "b"],
            "confirmed_at": pd.to_datetime(
                ["2024-01-20T00:00Z", "2024-02-13T00:00Z", "2024-03-04T00:00Z", "2024-02-01T20:00Z"]
            ),
        }
    )
    confirmed = frame.loc[
        frame["application_id"].isin(labels["application_id"]), ["application_id", "applied_at"]
    ]
    summary = monthly_summary(month_counts(frame), confirmed, labels)
    assert summary.loc["2024-01", "median_label_delay_days"] == 10
    assert summary.loc["2024-02", "median_label_delay_days"] == 10  # b: 1 day, c: 10 and 30 days
    assert np.isnan(summary.loc["2024-03", "median_label_delay_days"])
    assert summary.loc["2024-02", "label_rate"] == 1 / 3

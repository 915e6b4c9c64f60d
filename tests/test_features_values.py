"""The shared transforms: NaN where undefined, Beijing hours, flags from raw columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from duanka.features import values

NAN = np.nan


def test_share_is_nan_when_undefined():
    got = values.share(np.array([1, 0, 2, NAN]), np.array([4, 0, 0, 3]))
    np.testing.assert_array_equal(got, [0.25, NAN, NAN, NAN])


def test_excess_share_takes_the_member_out_of_the_group():
    # Member 2 of 4; the whole group 3 of 8, so the others 1 of 4.
    np.testing.assert_allclose(values.excess_share(2, 4, 3, 8), 0.25)
    assert np.isnan(values.excess_share(2, 4, 2, 4))  # nobody else: undefined


def test_weekly_rate_against_the_quarter():
    np.testing.assert_allclose(values.weekly_vs_quarterly_rate(14, 90), 2.0)
    assert np.isnan(values.weekly_vs_quarterly_rate(0, 0))


def test_a_burst_is_measured_against_the_pairs_own_usual_rate_in_noise_units():
    # A busy pair: 83 in the 83 days before (7 expected a week), 7 this week: no burst.
    np.testing.assert_allclose(values.weekly_burst(7, 90), 0.0, atol=1e-12)
    # A quiet pair: 8.3 over 83 days (0.7 expected), 6 this week: (6 - 0.7) / sqrt(1.7).
    np.testing.assert_allclose(values.weekly_burst(6, 14.3), 5.3 / np.sqrt(1.7))
    # The same excess of 5.3 over a busy pair's 70 expected is within its noise.
    assert values.weekly_burst(75.3, 905.3) < 1.0
    assert np.isnan(values.weekly_burst(NAN, NAN))  # no such pair: no value


def test_elsewhere_is_unknown_without_a_province():
    province = np.array(["45", "44", None, NAN], dtype=object)
    branch = np.array(["44", "44", "44", "44"], dtype=object)
    np.testing.assert_array_equal(values.elsewhere(province, branch), [1.0, 0.0, NAN, NAN])


def test_local_hour_is_beijing_time():
    rng = np.random.default_rng(0)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = rng.integers(1_500_000_000, 1_900_000_000, 500)
    stamps = [epoch + timedelta(seconds=int(s)) for s in seconds]
    expected = [s.astimezone(ZoneInfo("Asia/Shanghai")).hour for s in stamps]
    np.testing.assert_array_equal(values.local_hour(seconds * 1_000_000), expected)


def test_night_runs_from_22_to_6():
    hours = np.arange(24)
    at = (hours - 8) % 24 * values.HOUR_US  # UTC instants at each Beijing hour
    expected = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(values.night(at), expected)


def test_flags_treat_unknown_as_not():
    flags = values.derived_flags(
        {
            "account_type": np.array(["corporate", "corporate", "corporate", "personal"], object),
            "company_age_days": np.array([10, NAN, 400, 10]),
            "onsite_verified": np.array([1, NAN, 0, NAN]),
            "home_province": np.array(["44", "51", "44", "44"], object),
            "branch_province": np.array(["44", "44", "44", "11"], object),
            "u_shield": np.array([1, 1, 0, 1]),
            "mobile_banking": np.array([1, 1, 1, 1]),
            "payment_binding": np.array([1, 0, 1, 1]),
            "phone_tenure_days": np.array([3, NAN, 29, 30]),
        }
    )
    np.testing.assert_array_equal(flags["young_company"], [True, False, False, False])
    np.testing.assert_array_equal(flags["corporate_without_onsite"], [False, True, True, False])
    np.testing.assert_array_equal(flags["out_of_province"], [False, True, False, True])
    np.testing.assert_array_equal(flags["full_bundle"], [True, False, False, True])
    np.testing.assert_array_equal(flags["new_phone"], [True, False, True, False])


def test_all_true_and_codes():
    np.testing.assert_array_equal(values.all_true([1, 1, 0], [1, 0, 0], [1, 1, 1]), [1, 0, 0])
    np.testing.assert_array_equal(
        values.channel_code(np.array(["counter", "agent", None], object)), [0, 2, NAN]
    )

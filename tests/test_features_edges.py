"""Point-in-time edges, on hand-made histories, in both engines at once.

Every case is evaluated by the offline builder and by the online store
holding the same events and confirmations; the two must agree exactly before
the case's own expectation is checked.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_NAMES, LINK_FANOUT
from tests.factories import application, applications_table, label, labels_table

T0 = pd.Timestamp("2024-03-01 02:00:00", tz="UTC")
US = pd.Timedelta(microseconds=1)
DAY = pd.Timedelta(days=1)
_databases = itertools.count()


@pytest.fixture
def evaluate(tmp_path):
    def run(history: list[dict], target: dict, labels: list[dict] = ()) -> dict[str, float]:
        frame = build_features(applications_table([*history, target]), labels_table(list(labels)))
        row = frame.set_index("application_id").loc[target["application_id"], list(FEATURE_NAMES)]
        offline = row.to_numpy(dtype=float)
        with OnlineFeatureStore(tmp_path / f"state-{next(_databases)}.db") as store:
            for event in history:
                store.add_application(event)
            for confirmation in labels:
                store.add_label(
                    confirmation["application_id"],
                    confirmation["confirmed_at"],
                    confirmation["source"],
                )
            online = store.features_for(target, FEATURE_NAMES)
        np.testing.assert_array_equal(online, offline)
        return dict(zip(FEATURE_NAMES, offline, strict=True))

    return run


def test_same_timestamp_applications_do_not_see_each_other(evaluate):
    history = [
        application("a", T0 - US, escort_key="e"),
        application("b", T0, escort_key="e"),
        application("c", T0, escort_key="e"),
    ]
    values = evaluate(history, application("x", T0, escort_key="e"))
    assert values["escort_applicants_1d"] == 1  # only a; b and c are ties


@pytest.mark.parametrize(
    ("feature", "days"),
    [
        ("escort_applicants_1d", 1),
        ("escort_applicants_7d", 7),
        ("escort_applicants_30d", 30),
        ("escort_applicants_90d", 90),
        ("applicant_prior_applications_365d", 365),
    ],
)
@pytest.mark.parametrize(("gap", "counted"), [(pd.Timedelta(0), 1), (US, 0)])
def test_an_application_exactly_w_days_earlier_is_inside_the_window(evaluate, feature, days, gap, counted):
    # the escort's count is of other applicants; the applicant's own is of the same person
    earlier_applicant = "p" if feature.startswith("applicant_") else "q"
    history = [application("a", T0, escort_key="e", applicant_key=earlier_applicant)]
    target = application("x", T0 + days * DAY + gap, escort_key="e", applicant_key="p")
    assert evaluate(history, target)[feature] == counted


@pytest.mark.parametrize(
    ("confirmed_at", "counted"),
    [(T0 + 5 * DAY - US, 1), (T0 + 5 * DAY, 0), (T0 + 5 * DAY + US, 0)],
)
def test_a_confirmation_counts_only_strictly_before_the_application(evaluate, confirmed_at, counted):
    history = [application("a", T0, escort_key="e", staff_id="s", address_key="h")]
    target = application("x", T0 + 5 * DAY, escort_key="e", staff_id="s", address_key="h")
    values = evaluate(history, target, [label("a", confirmed_at)])
    for name in (
        "escort_confirmed_mules_365d",
        "staff_confirmed_mules_365d",
        "address_confirmed_mules_365d",
        "linked_group_confirmed_mules",
    ):
        assert values[name] == counted, name


@pytest.mark.parametrize(("gap", "counted"), [(pd.Timedelta(0), 1), (US, 0)])
def test_confirmed_mules_look_back_365_days_of_applications(evaluate, gap, counted):
    history = [application("a", T0, intermediary_key="i")]
    target = application("x", T0 + 365 * DAY + gap, intermediary_key="i")
    values = evaluate(history, target, [label("a", T0 + 10 * DAY)])
    assert values["intermediary_confirmed_mules_365d"] == counted


@pytest.mark.parametrize("days_later", [380, 401])
def test_a_confirmation_after_the_window_closed_never_counts(evaluate, days_later):
    history = [application("a", T0, intermediary_key="i")]
    target = application("x", T0 + days_later * DAY, intermediary_key="i")
    values = evaluate(history, target, [label("a", T0 + 400 * DAY)])
    assert values["intermediary_confirmed_mules_365d"] == 0


def test_the_earliest_of_two_confirmations_counts(evaluate):
    history = [application("a", T0, escort_key="e")]
    target = application("x", T0 + 20 * DAY, escort_key="e")
    labels = [label("a", T0 + 30 * DAY), label("a", T0 + 10 * DAY, "account_freeze")]
    assert evaluate(history, target, labels)["escort_confirmed_mules_365d"] == 1


def test_no_entity_is_nan_and_an_undefined_ratio_is_nan(evaluate):
    values = evaluate([], application("x", T0, escort_key="e"))
    assert values["escort_applicants_30d"] == 0  # an escort without history
    assert math.isnan(values["escort_out_of_province_share_30d"])  # 0 of 0
    assert math.isnan(values["intermediary_applications_30d"])  # no intermediary at all
    assert math.isnan(values["linked_group_span_days"])  # empty group
    assert values["linked_group_size"] == 0


def test_shares_and_deviation_from_the_branch_s_other_staff(evaluate):
    day = T0 - 3 * DAY
    history = [
        application(f"s1-{i}", day + i * US, staff_id="s1", photo_tampered=i < 2) for i in range(4)
    ] + [application(f"s2-{i}", day + i * US, staff_id="s2", photo_tampered=i < 1) for i in range(4)]
    values = evaluate(history, application("x", T0, staff_id="s1"))
    assert values["staff_openings_30d"] == 4
    assert values["staff_tampered_share_30d"] == 0.5
    assert values["staff_tampered_excess_30d"] == 0.5 - 0.25
    newcomer = evaluate(history, application("y", T0, staff_id="s3"))
    assert math.isnan(newcomer["staff_tampered_excess_30d"])  # no own openings yet


def test_branch_volume_and_out_of_province_against_its_baseline(evaluate):
    # 9 openings spread over 90 days, 3 of them in the last week, 2 from another province.
    history = [application(f"o{i}", T0 - (10 + 9 * i) * DAY) for i in range(6)] + [
        application(f"w{i}", T0 - (i + 1) * DAY, home_province="51" if i < 2 else "44") for i in range(3)
    ]
    values = evaluate(history, application("x", T0))
    assert values["branch_applications_7d"] == 3
    assert values["branch_volume_vs_baseline"] == pytest.approx((3 / 7) / (9 / 90))
    assert values["branch_out_of_province_share_7d"] == pytest.approx(2 / 3)
    assert values["branch_out_of_province_vs_baseline"] == pytest.approx(2 / 3 - 2 / 9)


def test_beijing_hour_and_night(evaluate):
    late = evaluate([], application("x", "2024-03-01T15:30:00Z"))  # 23:30 in Beijing
    assert (late["local_hour"], late["night_opening"]) == (23, 1)
    morning = evaluate([], application("y", "2024-03-01T22:00:00Z"))  # 06:00 next day
    assert (morning["local_hour"], morning["night_opening"]) == (6, 0)


def test_full_bundle_codes_and_own_facts(evaluate):
    values = evaluate(
        [],
        application(
            "x",
            T0,
            channel="agent",
            address_kind="lodging",
            u_shield=True,
            mobile_banking=True,
            payment_binding=True,
            account_type="corporate",
            onsite_verified=False,
            company_age_days=12,
            home_province="51",
        ),
    )
    assert values["full_bundle"] == 1
    assert values["channel"] == 2
    assert values["address_kind"] == 0
    assert values["corporate"] == 1
    assert values["onsite_verified"] == 0
    assert values["company_age_days"] == 12
    assert values["applicant_out_of_province"] == 1


class TestLinkedGroup:
    def test_two_hops_but_not_three(self, evaluate):
        history = [
            application("a", T0 - 3 * DAY, phone_key="p"),  # x's phone: hop 1
            application("c", T0 - 2 * DAY, phone_key="p", device_key="d"),  # hop 1
            application("b", T0 - 2 * DAY, device_key="d", escort_key="e"),  # c's device: hop 2
            application("w", T0 - 1 * DAY, escort_key="e"),  # b's escort: hop 3, too far
        ]
        values = evaluate(history, application("x", T0, phone_key="p"))
        assert values["linked_group_size"] == 3  # a, c and b

    def test_a_hub_key_keeps_only_its_most_recent_applications(self, evaluate):
        # Ten applicants at one dormitory, the last two at the same instant: ids break the tie.
        history = [
            application(f"h{i:02d}", T0 - (20 - i) * DAY, address_key="dorm", branch_id=f"B{i}")
            for i in range(8)
        ] + [
            application("tie-b", T0 - DAY, address_key="dorm", branch_id="B8"),
            application("tie-a", T0 - DAY, address_key="dorm", branch_id="B9"),
        ]
        values = evaluate(history, application("x", T0, address_key="dorm"))
        assert values["address_applicants_30d"] == 10  # the family feature sees all
        assert values["linked_group_size"] == LINK_FANOUT
        # Kept: tie-b, tie-a, h07, h06, h05 -> the earliest kept is h05, 15 days back.
        assert values["linked_group_span_days"] == 15
        assert values["linked_group_branches"] == LINK_FANOUT

        cut = history[:-1]  # without tie-a, h04 is kept instead
        assert evaluate(cut, application("x", T0, address_key="dorm"))["linked_group_span_days"] == 16

    def test_the_tie_break_at_the_cap_is_by_application_id(self, evaluate):
        history = [application(f"h{i}", T0 - 2 * DAY, address_key="dorm") for i in range(7)]
        history += [application("late", T0 - DAY, address_key="dorm", branch_id="B9")]
        # Kept: late, then h6, h5, h4, h3 (largest ids among the tied).
        base = evaluate(history, application("x", T0, address_key="dorm"))
        confirmed_low = evaluate(history, application("x", T0, address_key="dorm"), [label("h0", T0 - DAY)])
        confirmed_high = evaluate(history, application("x", T0, address_key="dorm"), [label("h6", T0 - DAY)])
        assert base["linked_group_confirmed_mules"] == 0
        assert confirmed_low["linked_group_confirmed_mules"] == 0  # h0 fell outside the cap
        assert confirmed_high["linked_group_confirmed_mules"] == 1

    def test_own_earlier_applications_carry_links_but_are_not_members(self, evaluate):
        history = [
            application("mine", T0 - 5 * DAY, applicant_key="me", device_key="d"),
            application("other", T0 - 4 * DAY, device_key="d"),
        ]
        target = application("x", T0, applicant_key="me", phone_key="phone-mine")
        values = evaluate(history, target)
        assert values["linked_group_size"] == 1  # "other", reached through my earlier application
        assert values["linked_group_span_days"] == 4

    @pytest.mark.parametrize(("gap", "size"), [(pd.Timedelta(0), 1), (US, 0)])
    def test_the_group_window_is_30_days(self, evaluate, gap, size):
        history = [application("a", T0 - 30 * DAY - gap, escort_key="e")]
        assert evaluate(history, application("x", T0, escort_key="e"))["linked_group_size"] == size


def test_different_applicants_are_other_people_than_the_applicant(evaluate):
    # the same person resubmitting seconds later is not a second applicant of the escort, the
    # phone, the device or the phone block; another person is
    same = dict(escort_key="e", phone_key="m", device_key="d", phone_block_key="b", address_key="h")
    history = [application("a", T0, applicant_key="p", **same)]
    again = evaluate(history, application("x", T0 + US, applicant_key="p", **same))
    other = evaluate(history, application("y", T0 + US, applicant_key="q", **same))
    for name in (
        "escort_applicants_1d",
        "phone_applicants_30d",
        "device_applicants_30d",
        "phone_block_applicants_1d",
        "address_applicants_30d",
    ):
        assert (again[name], other[name]) == (0, 1), name
    assert again["applicant_prior_applications_30d"] == 1  # the resubmission is its own signal

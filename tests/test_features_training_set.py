"""Training sets: what as_of lets in, labels, maturity, counts and the fingerprint."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from duanka.features.registry import FEATURE_NAMES, FEATURE_SET_VERSION
from duanka.features.training_set import build_training_set, write_training_set
from tests.factories import (
    EventFactory,
    application,
    applications_table,
    label,
    labels_table,
    listing,
    listings_table,
)

T0 = pd.Timestamp("2024-01-01", tz="UTC")
US = pd.Timedelta(microseconds=1)
DAY = pd.Timedelta(days=1)
AS_OF = T0 + 200 * DAY


@pytest.fixture
def handmade():
    apps = [
        application("on_the_window_edge", T0),  # confirmed exactly 180 days later: 1
        application("just_too_late", T0),  # confirmed 180 days + 1 µs later: 0
        application("mature_edge", T0 + 20 * DAY),  # window ends exactly at as_of: mature
        application("immature_edge", T0 + 20 * DAY + US),
        application("early_positive", T0 + 100 * DAY),  # confirmed, window still open
        application("confirmed_after_as_of", T0 + 10 * DAY),
        application("after_as_of", AS_OF + US),  # not there at all
        application("at_as_of", AS_OF),
    ]
    labels = [
        label("on_the_window_edge", T0 + 180 * DAY),
        label("just_too_late", T0 + 180 * DAY + US),
        label("early_positive", T0 + 110 * DAY),
        label("confirmed_after_as_of", AS_OF + US),
        label("after_as_of", AS_OF + 2 * DAY),
    ]
    return applications_table(apps), labels_table(labels)


def test_labels_maturity_and_counts(handmade):
    ts = build_training_set(*handmade, as_of=AS_OF, outcome_window_days=180)
    frame = ts.frame.set_index("application_id")
    assert "after_as_of" not in frame.index
    assert frame["label"].to_dict() == {
        "on_the_window_edge": 1,
        "just_too_late": 0,
        "confirmed_after_as_of": 0,
        "mature_edge": 0,
        "immature_edge": 0,
        "early_positive": 1,
        "at_as_of": 0,
    }
    mature = ["just_too_late", "on_the_window_edge", "confirmed_after_as_of", "mature_edge"]
    assert frame.index[frame["label_mature"]].tolist() == mature  # (applied_at, id) order
    s = ts.summary
    assert (s.rows, s.mature, s.immature, s.positives, s.immature_positives) == (7, 4, 3, 1, 1)
    assert ts.mature()["application_id"].tolist() == mature


def test_frame_columns_and_types(handmade):
    frame = build_training_set(*handmade, as_of=AS_OF).frame
    assert list(frame.columns) == ["application_id", "applied_at", *FEATURE_NAMES, "label", "label_mature"]
    assert (frame[list(FEATURE_NAMES)].dtypes == "float64").all()
    assert frame["label"].dtype == "int8"
    assert frame["label_mature"].dtype == bool


def test_a_naive_as_of_is_beijing_time(handmade):
    beijing = build_training_set(*handmade, as_of=pd.Timestamp("2024-07-19 08:00"))
    assert beijing.as_of == AS_OF
    assert beijing.summary == build_training_set(*handmade, as_of=AS_OF).summary


def test_confirmations_after_as_of_reach_no_feature():
    events = EventFactory(n=3_000, seed=41).build()
    as_of = events.applications["applied_at"].to_pandas().iloc[2_000]
    cut = events.labels.filter(pd.Series(events.labels["confirmed_at"].to_pandas() <= as_of).to_numpy())
    everything = build_training_set(events.applications, events.labels, as_of=as_of)
    known = build_training_set(events.applications, cut, as_of=as_of)
    pd.testing.assert_frame_equal(everything.frame, known.frame)
    assert everything.inputs_sha256 == known.inputs_sha256


def test_written_set_and_fingerprint(handmade, tmp_path):
    ts = build_training_set(*handmade, as_of=AS_OF)
    fingerprint = write_training_set(ts, tmp_path / "sets" / "train.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sets" / "train.parquet"), ts.frame)
    stored = json.loads((tmp_path / "sets" / "train.fingerprint.json").read_text(encoding="utf-8"))
    assert stored == fingerprint
    assert stored["feature_set_version"] == FEATURE_SET_VERSION
    assert stored["as_of"] == "2024-07-19T00:00:00+00:00"
    assert stored["counts"] == {
        "rows": 7,
        "mature": 4,
        "immature": 3,
        "positives": 1,
        "immature_positives": 1,
        "rule_refused": 0,
    }
    assert [c["name"] for c in stored["schema"]] == list(ts.frame.columns)
    assert set(stored["inputs_sha256"]) == {"applications", "labels", "watchlist"}
    assert len(stored["parquet_sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == [
        "train.fingerprint.json",
        "train.parquet",
    ]


def test_input_hashes_follow_content_not_order(handmade):
    apps, labels = handmade
    one = build_training_set(apps, labels, as_of=AS_OF).inputs_sha256
    shuffled = build_training_set(apps.take([7, 3, 1, 0, 2, 6, 5, 4]), labels, as_of=AS_OF)
    fewer = build_training_set(apps.slice(1), labels, as_of=AS_OF)
    assert shuffled.inputs_sha256 == one
    assert fewer.inputs_sha256["applications"] != one["applications"]


@pytest.fixture
def with_listings():
    apps = [
        application("before_listing", T0 + 9 * DAY, applicant_key="p", escort_key="e"),
        application("at_listing", T0 + 10 * DAY, applicant_key="p", escort_key="e"),  # refused
        application("listed", T0 + 30 * DAY, applicant_key="p", escort_key="e"),  # refused
        application("at_expiry", T0 + 50 * DAY, applicant_key="p", escort_key="e"),  # ended: kept
        application("withdrawn", T0 + 30 * DAY, applicant_key="q"),  # never listed at all
        application("listed_after_as_of", AS_OF, applicant_key="r"),
        application("other", T0 + 60 * DAY, escort_key="e"),
    ]
    listings = [
        listing("p", T0 + 10 * DAY, T0 + 50 * DAY),
        listing("q", T0, T0),
        listing("r", AS_OF + US),  # does not exist as of AS_OF
    ]
    labels = [label("listed", T0 + 40 * DAY)]  # refused, yet confirmed: still not a training row
    return applications_table(apps), labels_table(labels), listings_table(listings)


def test_applications_the_watchlist_rule_refuses_are_left_out_and_counted(with_listings, tmp_path):
    apps, labels, listings = with_listings
    ts = build_training_set(apps, labels, listings=listings, as_of=AS_OF)
    assert ts.frame["application_id"].tolist() == [
        "before_listing",
        "withdrawn",
        "at_expiry",
        "other",
        "listed_after_as_of",
    ]
    assert ts.summary.rule_refused == 2
    assert ts.summary.rows == 5
    assert ts.refused["application_id"].tolist() == ["at_listing", "listed"]
    assert ts.refused["label"].tolist() == [0, 1]
    assert list(ts.refused.columns) == list(ts.frame.columns)
    # They happened: the escort's other applications still count them.
    frame = ts.frame.set_index("application_id")
    assert frame.loc["other", "escort_listed_applications_365d"] == 4
    assert frame.loc["at_expiry", "applicant_ended_listings"] == 1
    fingerprint = write_training_set(ts, tmp_path / "train.parquet")
    assert fingerprint["counts"]["rule_refused"] == 2
    assert set(pd.read_parquet(tmp_path / "train.parquet")["application_id"]).isdisjoint(
        ts.refused["application_id"]
    )


def test_without_listings_nothing_is_refused_and_a_later_listing_changes_nothing(with_listings):
    apps, labels, listings = with_listings
    bare = build_training_set(apps, labels, as_of=AS_OF)
    assert bare.summary.rule_refused == 0 and len(bare.frame) == 7
    later_only = listings_table([row for row in listings.to_pylist() if row["applicant_key"] == "r"])
    later = build_training_set(apps, labels, listings=later_only, as_of=AS_OF)
    pd.testing.assert_frame_equal(later.frame, bare.frame)
    assert later.inputs_sha256 == bare.inputs_sha256  # a listing after as_of is not an input

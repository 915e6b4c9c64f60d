"""The registry: one declaration per feature, the model's list, the version, the catalogue."""

from __future__ import annotations

import dataclasses
import re
import types

import numpy as np
import pytest

from duanka.data.events import APPLICATION_EVENTS
from duanka.features import catalogue, values
from duanka.features.columns import COMPARED
from duanka.features.declaration import Aggregate, Entity, Family, Feature, Op
from duanka.features.registry import (
    AGGREGATES,
    BY_NAME,
    CONFIRMED_WINDOW_DAYS,
    FEATURE_SET_VERSION,
    FEATURES,
    LINK_KEYS,
    MAX_WINDOW_DAYS,
    MODEL_FEATURES,
    feature_set_version,
)


def test_names_are_unique_and_descriptions_have_one_value_placeholder():
    assert len(BY_NAME) == len(FEATURES)
    for f in FEATURES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name), f.name
        assert f.zh.count("{value}") == 1, f.name
        assert f.en.count("{value}") == 1, f.name


def test_every_family_is_declared():
    assert {f.family for f in FEATURES} == set(Family)


def test_windows_match_their_aggregates_and_stay_within_the_state_bound():
    for f in FEATURES:
        if f.aggregates:
            assert f.window_days == max(a.window_days for a in f.aggregates), f.name
            assert f.entity is not Entity.APPLICATION, f.name
        else:
            assert (f.window_days, f.entity) == (None, Entity.APPLICATION), f.name
        assert (f.window_days or 0) <= MAX_WINDOW_DAYS


def test_listing_counts_share_the_confirmed_window_and_ended_listings_have_none():
    listed = [f for f in FEATURES if any(a.op is Op.LISTED for a in f.aggregates)]
    entities = {Entity.ESCORT, Entity.INTERMEDIARY, Entity.ADDRESS, Entity.PHONE, Entity.DEVICE}
    assert {f.entity for f in listed} == entities
    assert {f.window_days for f in listed} == {CONFIRMED_WINDOW_DAYS}
    ended = BY_NAME["applicant_ended_listings"]
    assert (ended.entity, ended.window_days, ended.in_model) == (Entity.APPLICANT, None, True)
    with pytest.raises(ValueError, match="window"):
        Aggregate(Entity.ESCORT, Op.LISTED, None)
    with pytest.raises(ValueError, match="window"):
        Aggregate(Entity.APPLICANT, Op.LISTINGS_ENDED, 365)


def test_model_features_follow_the_registry_and_leave_gender_out():
    assert list(MODEL_FEATURES) == [f.name for f in FEATURES if f.in_model]
    assert "applicant_gender" not in MODEL_FEATURES
    assert "applicant_gender" in BY_NAME  # still built, for fairness monitoring


def _with(name: str, **changes: object) -> tuple[Feature, ...]:
    """The registry with one feature's declaration changed."""
    return tuple(dataclasses.replace(f, **changes) if f.name == name else f for f in FEATURES)


def test_version_is_a_stable_hash_of_the_declarations():
    assert re.fullmatch(r"[0-9a-f]{16}", FEATURE_SET_VERSION)
    assert feature_set_version() == FEATURE_SET_VERSION
    assert feature_set_version(FEATURES, MODEL_FEATURES[:-1]) != FEATURE_SET_VERSION


def test_rewording_a_description_keeps_the_version():
    escort = BY_NAME["escort_applicants_30d"]
    reworded = _with(escort.name, en=escort.en + ".", zh=escort.zh + "。")
    assert feature_set_version(reworded) == FEATURE_SET_VERSION
    assert feature_set_version(_with(escort.name, family=Family.BRANCH)) == FEATURE_SET_VERSION


def test_changing_a_window_changes_the_version():
    escort = BY_NAME["escort_applicants_30d"]
    (count,) = escort.aggregates
    longer = Aggregate(count.entity, count.op, 60, count.column)
    assert feature_set_version(_with(escort.name, inputs=(longer,))) != FEATURE_SET_VERSION
    assert feature_set_version(_with(escort.name, window_days=60)) != FEATURE_SET_VERSION


def test_what_a_value_is_computed_from_changes_the_version():
    escort = BY_NAME["escort_applicants_30d"]
    (count,) = escort.aggregates
    by_device = Aggregate(Entity.DEVICE, count.op, 30, count.column)
    assert feature_set_version(_with(escort.name, inputs=(by_device,))) != FEATURE_SET_VERSION
    assert feature_set_version(_with(escort.name, transform=values.number)) != FEATURE_SET_VERSION
    assert feature_set_version(_with("channel", codes=BY_NAME["channel"].codes[::-1])) != FEATURE_SET_VERSION


def test_the_version_does_not_depend_on_the_transforms_import_name():
    """The package's import name changed once (features -> duanka.features): values did not."""
    count = values.count
    relocated = types.FunctionType(count.__code__, count.__globals__, count.__name__)
    relocated.__qualname__, relocated.__module__ = count.__qualname__, "somewhere.else.values"
    assert feature_set_version(_with("escort_applicants_30d", transform=relocated)) == FEATURE_SET_VERSION


def test_descriptions_read_with_values():
    assert BY_NAME["escort_applicants_30d"].describe(7.0) == "该陪同人近30天陪同7名不同开户人"
    assert BY_NAME["escort_applicants_30d"].describe(7.0, "en") == (
        "The escort accompanied 7 different applicants in the last 30 days"
    )
    assert BY_NAME["channel"].describe(1.0, "en") == "Opening channel: mobile"
    assert BY_NAME["staff_tampered_share_30d"].describe(1 / 3, "en").endswith(": 33%")
    # a rare share is said as rare, never as none
    rare = BY_NAME["branch_address_province_share_365d"]
    assert rare.shown(0.004) == "0.4%" and rare.shown(0.0) == "0%" and rare.shown(0.02) == "2%"


def test_categories_are_small_integer_codes():
    for f in FEATURES:
        if f.codes:
            assert len(set(f.codes)) == len(f.codes), f.name
    value = BY_NAME["address_kind"].evaluate(
        {"address_kind": np.array(["dormitory", "unknown"], dtype=object)}, {}
    )
    np.testing.assert_array_equal(value, [1.0, np.nan])


def test_the_docs_catalogue_is_current():
    page = catalogue.PAGE.read_text(encoding="utf-8")
    assert catalogue.render(page) == page, "run: python -m duanka.features.catalogue"


def test_entities_name_their_key_columns_and_both_engines_keep_them():
    assert Entity.STAFF_AT_BRANCH.keys == ("branch_id", "staff_id")
    assert Entity.APPLICATION.keys == Entity.LINKED.keys == ()
    event_columns = set(APPLICATION_EVENTS.names)
    for a in AGGREGATES:
        read = {*a.entity.keys, *([a.column] if a.op in (Op.DISTINCT, Op.OTHERS) else [])}
        assert read <= set(COMPARED) <= event_columns, a.name
    assert set(LINK_KEYS) <= set(COMPARED)

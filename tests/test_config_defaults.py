"""Each default is written once, in Settings: the configurations built from it take it from there."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from duanka.data.config import Settings, default_of
from duanka.serving.admission import AdmissionPolicy
from duanka.serving.lifecycle import ServiceConfig
from duanka.serving.scorer import DEFAULT_FUTURE_TOLERANCE, DEFAULT_TOLERANCE
from duanka.training.bands import RefreshPolicy


def test_a_default_is_read_from_the_settings_and_an_unknown_name_refused():
    assert default_of("data_dir") == Path("data/store") == Settings.model_fields["data_dir"].default
    assert default_of("pseudonym_key") is None
    with pytest.raises(KeyError):
        default_of("no_such_setting")


def test_the_admission_policy_takes_the_settings_defaults():
    policy = AdmissionPolicy()
    for name in ("rate_limit", "max_in_flight", "header_timeout_s", "body_timeout_s", "keep_alive_s"):
        assert getattr(policy, name) == default_of(name), name


def test_the_band_refresh_policy_takes_the_settings_defaults():
    assert RefreshPolicy() == RefreshPolicy(
        default_of("band_refresh_days"), default_of("band_refresh_min_scores")
    )


def test_the_service_takes_the_settings_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(ServiceConfig)}
    assert defaults["anchor_every_s"] == default_of("audit_anchor_every_s")
    assert defaults["prune_every_s"] == default_of("prune_every_s")
    assert defaults["monitor_every_s"] == default_of("monitor_every_s")
    assert defaults["outcome_window_days"] == default_of("outcome_window_days")
    assert (
        defaults["tolerance"] == DEFAULT_TOLERANCE == timedelta(seconds=default_of("backdating_tolerance_s"))
    )
    assert (
        defaults["future_tolerance"]
        == DEFAULT_FUTURE_TOLERANCE
        == timedelta(seconds=default_of("future_tolerance_s"))
    )

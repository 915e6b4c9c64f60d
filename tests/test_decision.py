"""The one scoring path: a feature row's score, band and reasons do not depend on the rows around it.

The service decides a request's few rows, batch scoring decides chunks of thousands, both through
:func:`duanka.serving.decision.decide`; these tests hold its answers to depend on each row alone, so that
the two agree (end to end: ``tests/test_batch.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duanka.features.offline import build_features
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.decision import LOW, decide
from duanka.serving.model_source import ModelSource
from duanka.training.bands import Bands, DailyBands, local_days
from duanka.training.explain import FEW_ROWS


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


@pytest.fixture(scope="module")
def recent(served_bank) -> pd.DataFrame:
    """The last openings of the history: more than a small request, so a batch runs LightGBM's threads."""
    features = build_features(served_bank.store.applications(), served_bank.store.labels())
    return features.sort_values(["applied_at", "application_id"]).tail(FEW_ROWS + 44)


def _matrix(features: pd.DataFrame) -> np.ndarray:
    return features.loc[:, list(MODEL_FEATURES)].to_numpy(dtype=np.float64)


def test_a_row_decided_alone_gets_what_it_gets_among_many(recent, model):
    X = _matrix(recent)
    cuts = model.registered.bundle.bands
    together = decide(model, X, cuts, explain_all=True)
    alone = [decide(model, X[i : i + 1], cuts, explain_all=True) for i in range(len(X))]
    np.testing.assert_array_equal(together.scores, np.concatenate([a.scores for a in alone]))
    assert together.bands.tolist() == [a.bands[0] for a in alone]
    assert together.reasons == [a.reasons[0] for a in alone]
    assert sum(map(len, together.reasons)) > len(X)  # most rows have reasons to compare


def test_only_medium_or_higher_bands_are_explained_unless_every_row_is_asked_for(recent, model):
    X = _matrix(recent)
    cuts = model.registered.bundle.bands
    every = decide(model, X, cuts, explain_all=True)
    flagged = decide(model, X, cuts)
    np.testing.assert_array_equal(flagged.scores, every.scores)
    low = flagged.bands == LOW
    assert low.any() and (~low).any()
    assert all(reasons == [] for reasons in np.array(flagged.reasons, dtype=object)[low])
    assert [r for r, is_low in zip(flagged.reasons, low, strict=True) if not is_low] == [
        r for r, is_low in zip(every.reasons, low, strict=True) if not is_low
    ]


def test_daily_cuts_band_each_row_by_its_own_day(recent, model):
    X = _matrix(recent)
    days = local_days(recent["applied_at"])
    last = days.max()
    everything_critical = Bands(critical=0.0, high=0.0, medium=0.0)
    cuts = DailyBands(model.registered.bundle.bands, {last: everything_critical})
    decided = decide(model, X, cuts, applied_at=recent["applied_at"])
    on_last = days == last
    assert on_last.any() and (~on_last).any()
    assert set(decided.bands[on_last]) == {"critical"}
    assert (
        decided.bands[~on_last].tolist()
        == model.registered.bundle.bands.assign(decided.scores[~on_last]).tolist()
    )
    with pytest.raises(ValueError, match="applied_at"):
        decide(model, X, cuts)

"""The training set built and sampled on the cluster holds exactly what a run uses of the one-machine set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from duanka.features.training_set import build_training_set
from duanka.training.bands import BAND_WINDOW_DAYS
from duanka.training.monthly import month_counts
from duanka.training.sampled_set import build_sampled_training_set, uniform
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit
from tests.factories import EventFactory

AS_OF = pd.Timestamp("2025-01-20", tz="UTC")
WINDOW_DAYS = 60
RATE = 0.3
SEED = 7


@pytest.fixture(scope="module")
def events():
    """Dense linkage, rings, listings, and a repeated application id (the first in time stands)."""
    built = EventFactory(n=12_000, seed=23).build()
    apps = built.applications
    again = apps.slice(300, 20)
    later = pa.array(
        again["applied_at"].to_pandas() + pd.Timedelta(hours=2), apps.schema.field("applied_at").type
    )
    at = again.schema.get_field_index("applied_at")
    return (
        pa.concat_tables([apps, again.set_column(at, again.schema.field(at), later)]),
        built.labels,
        built.listings,
    )


@pytest.fixture(scope="module")
def split():
    return TimeSplit.before_maturity(AS_OF, outcome_window_days=WINDOW_DAYS, valid_months=2, test_months=2)


@pytest.fixture(scope="module")
def sets(dask_client, events, split, tmp_path_factory):
    apps, labels, listings = events
    folder = tmp_path_factory.mktemp("sampled")
    paths = []
    for i, start in enumerate(range(0, len(apps), 4_000)):
        paths.append(folder / f"applications-{i}.parquet")
        pq.write_table(apps.slice(start, 4_000), paths[-1])
    pq.write_table(labels, folder / "labels.parquet")
    scratch = folder / "scratch"
    scratch.mkdir()
    want = build_training_set(apps, labels, listings=listings, as_of=AS_OF, outcome_window_days=WINDOW_DAYS)
    got = build_sampled_training_set(
        dask_client,
        paths,
        [folder / "labels.parquet"],
        as_of=AS_OF,
        split=split,
        negative_rate=RATE,
        seed=SEED,
        listings=listings,
        outcome_window_days=WINDOW_DAYS,
        scratch=scratch,
        partitions=3,
    )
    return want, got, scratch


def _parts(frame: pd.DataFrame, split: TimeSplit) -> pd.Series:
    return split.assign(frame["applied_at"])


def test_the_whole_sets_counts_and_input_hashes_are_the_one_machine_sets(sets, split):
    want, got, scratch = sets
    assert got.training_set.summary == want.summary
    assert want.summary.rule_refused > 0 and want.summary.immature > 0
    assert got.training_set.inputs_sha256 == want.inputs_sha256
    mature = want.mature()
    part = _parts(mature, split)
    for name in (TRAIN, VALID, TEST):
        rows = mature.loc[part == name]
        assert got.part_counts[name] == (len(rows), int(rows["label"].sum()))
    pd.testing.assert_frame_equal(got.months, month_counts(want.frame), check_dtype=False)
    assert list(scratch.iterdir()) == []


def test_validation_and_test_months_are_whole_and_equal(sets, split):
    want, got, _ = sets
    mature = want.mature()
    expected = mature.loc[_parts(mature, split).isin([VALID, TEST]).to_numpy()].reset_index(drop=True)
    frame = got.training_set.frame
    found = frame.loc[_parts(frame, split).isin([VALID, TEST]).to_numpy()].reset_index(drop=True)
    assert len(expected) > 500
    pd.testing.assert_frame_equal(found[expected.columns], expected, check_exact=False, rtol=0, atol=1e-9)
    assert (found["weight"] == 1).all() and not found["uniform"].any()


def test_training_months_keep_every_mule_and_the_hash_chosen_legitimate_openings(sets, split):
    want, got, _ = sets
    mature = want.mature()
    train = mature.loc[(_parts(mature, split) == TRAIN).to_numpy()]
    chosen = uniform(train["application_id"].to_numpy(), SEED) < RATE
    expected = train.loc[(train["label"].to_numpy() == 1) | chosen].reset_index(drop=True)
    frame = got.training_set.frame
    found = frame.loc[(_parts(frame, split) == TRAIN).to_numpy()].reset_index(drop=True)
    pd.testing.assert_frame_equal(found[expected.columns], expected, check_exact=False, rtol=0, atol=1e-9)
    negative = found["label"].to_numpy() == 0
    assert np.allclose(found["weight"].to_numpy()[negative], 1 / RATE)
    assert (found["weight"].to_numpy()[~negative] == 1).all()
    share = negative.sum() / (train["label"].to_numpy() == 0).sum()
    assert share == pytest.approx(RATE, abs=0.03)
    # the uniform sample is the hash's choice whatever the label: mules at the rate too
    mules = found.loc[~negative]
    assert mules["uniform"].mean() == pytest.approx(RATE, abs=0.1)


def test_refused_applications_of_the_evaluated_months_come_back_for_the_report(sets, split):
    want, got, _ = sets
    refused = want.refused.loc[want.refused["label_mature"].to_numpy()]
    expected = refused.loc[_parts(refused, split).isin([VALID, TEST]).to_numpy()].reset_index(drop=True)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(
        got.training_set.refused, expected, check_exact=False, rtol=0, atol=1e-9, check_dtype=False
    )


def test_the_choice_depends_on_the_id_and_seed_alone():
    ids = np.array([f"app-{i}" for i in range(20_000)], dtype=object)
    u = uniform(ids, SEED)
    assert ((u >= 0) & (u < 1)).all()
    assert u.mean() == pytest.approx(0.5, abs=0.01)
    order = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(uniform(ids[order], SEED), u[order])  # not the position: the id
    assert not np.array_equal(uniform(ids, SEED + 1), u)


def test_a_tuning_search_is_refused_on_a_set_built_on_the_cluster(tmp_path):
    from duanka.data.config import Settings
    from duanka.data.store import EventStore
    from duanka.training.run import Cluster, TrainConfig, train

    config = TrainConfig(as_of=AS_OF, tune_trials=3)
    with pytest.raises(ValueError, match="tuning search fits on every training row"):
        train(
            EventStore(tmp_path), config, Settings(models_dir=tmp_path), progress=False, cluster=Cluster(None)
        )


def test_immature_applications_come_back_sampled_and_the_latest_whole(sets):
    want, got, _ = sets
    young = want.frame.loc[~want.frame["label_mature"].to_numpy()]
    latest = (young["applied_at"] >= want.as_of - pd.Timedelta(days=BAND_WINDOW_DAYS)).to_numpy()
    chosen = uniform(young["application_id"].to_numpy(), SEED) < RATE
    expected = young.loc[latest | (young["label"].to_numpy() == 1) | chosen].reset_index(drop=True)
    frame = got.training_set.frame
    found = frame.loc[~frame["label_mature"].to_numpy()].reset_index(drop=True)
    assert len(expected) > 100 and latest.sum() > 0
    pd.testing.assert_frame_equal(found[expected.columns], expected, check_exact=False, rtol=0, atol=1e-9)
    recent = (found["applied_at"] >= want.as_of - pd.Timedelta(days=BAND_WINDOW_DAYS)).to_numpy()
    assert not found["sampled"].to_numpy()[recent].any() and (found["weight"].to_numpy()[recent] == 1).all()
    older_negative = ~recent & (found["label"].to_numpy() == 0)
    assert found["sampled"].to_numpy()[~recent].all()
    assert np.allclose(found["weight"].to_numpy()[older_negative], 1 / RATE)

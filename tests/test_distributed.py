"""The Dask engine gives the single-machine builder's features and batch scores, value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from duanka.features.declaration import Entity
from duanka.features.distributed import BuildOptions, build_features_distributed, builder, plan
from duanka.features.offline import build_features
from duanka.features.registry import FEATURES
from duanka.features.training_set import build_training_set
from duanka.serving.batch import score_period, score_period_distributed
from duanka.serving.model_source import ModelSource
from tests.factories import EventFactory


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


@pytest.fixture(scope="module")
def events():
    """Dense linkage and rings; repeated application ids (the first in time order stands); listings."""
    built = EventFactory(n=12_000, seed=11).build()
    apps = built.applications
    again = apps.slice(100, 40)
    stamp = apps.schema.field("applied_at").type
    later = pa.array(again["applied_at"].to_pandas() + pd.Timedelta(hours=1), stamp)
    at = again.schema.get_field_index("applied_at")
    repeated = again.set_column(at, again.schema.field(at), later)
    same_instant = apps.slice(500, 5)  # an exact repeat: same id, same instant
    return pa.concat_tables([apps, repeated, same_instant]), built.labels, built.listings


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got["application_id"].tolist() == want["application_id"].tolist()
    assert (got["applied_at"].to_numpy() == want["applied_at"].to_numpy()).all()
    a = got.iloc[:, 2:].to_numpy(dtype=np.float64)
    b = want.iloc[:, 2:].to_numpy(dtype=np.float64)
    same = np.isclose(a, b, rtol=0, atol=1e-9, equal_nan=True)
    wrong = sorted({want.columns[2 + c] for c in np.nonzero(~same)[1]})
    assert not wrong, f"features differ: {wrong}"


def test_the_plan_builds_every_feature_once_on_a_key_that_holds_its_counts_whole():
    shards = plan()
    names = [f.name for s in shards for f in s.features]
    assert sorted(names) == sorted(f.name for f in FEATURES)
    for shard in shards:
        for feature in shard.features:
            for aggregate in feature.aggregates:
                if aggregate.entity is Entity.LINKED:
                    assert shard.key == "applied_at"
                else:
                    assert shard.key in aggregate.entity.keys
    by_name = {f.name: s.key for s in shards for f in s.features}
    assert by_name["staff_tampered_excess_30d"] == "branch_id"


def test_dask_features_equal_the_single_machine_builder(client, events):
    apps, labels, listings = events
    want = build_features(apps, labels, listings=listings)
    assert (want["escort_listed_applications_365d"] > 0).sum() > 0
    # Short link blocks: most blocks lean on the 30-day halo of the one before.
    got = build_features_distributed(
        apps, labels, client=client, listings=listings, options=BuildOptions(partitions=3, link_block_days=31)
    )
    _assert_same(got, want)


def test_workers_read_parquet_themselves_with_a_filter(client, events, tmp_path):
    apps, labels, _ = events
    paths = []
    for i, start in enumerate(range(0, len(apps), 5_000)):
        paths.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(apps.slice(start, 5_000), paths[-1])
    pq.write_table(labels, tmp_path / "labels.parquet")
    stamp = apps.schema.field("applied_at").type
    cut = pa.scalar(pd.Timestamp("2024-09-01", tz="UTC").to_pydatetime(), stamp)
    where = pc.field("applied_at") < cut
    want = build_features(apps.filter(where), labels)
    scratch = tmp_path / "scratch"
    got = build_features_distributed(
        paths,
        [tmp_path / "labels.parquet"],
        client=client,
        options=BuildOptions(applications_where=where),
        scratch=scratch,
    )
    _assert_same(got, want)
    assert list(scratch.iterdir()) == []  # every stage's files, and the features, removed


def test_a_failed_run_leaves_no_stage_files_behind(client, events, tmp_path):
    apps, _, _ = events
    pq.write_table(apps.slice(0, 2_000), tmp_path / "applications.parquet")
    scratch = tmp_path / "scratch"
    with pytest.raises(FileNotFoundError):
        build_features_distributed(
            [tmp_path / "applications.parquet"],
            [tmp_path / "missing.parquet"],
            client=client,
            scratch=scratch,
        )
    assert list(scratch.iterdir()) == []


def test_a_training_set_on_dask_is_the_same_training_set(client, events):
    apps, labels, listings = events
    as_of = pd.Timestamp("2024-12-01", tz="UTC")
    want = build_training_set(apps, labels, listings=listings, as_of=as_of)
    assert want.summary.rule_refused > 0
    got = build_training_set(
        apps, labels, listings=listings, as_of=as_of, builder=builder(client, BuildOptions(partitions=2))
    )
    pd.testing.assert_frame_equal(got.frame, want.frame, check_exact=False, rtol=0, atol=1e-9)
    assert got.summary == want.summary and got.inputs_sha256 == want.inputs_sha256


@pytest.fixture(scope="module")
def model(served_bank):
    return ModelSource(served_bank.uri, served_bank.client()).load()


def test_dask_batch_scores_equal_batch_scoring(client, served_bank, model):
    start = pd.Timestamp("2025-01-01T00:00:00+08:00").tz_convert("UTC")
    end = pd.Timestamp("2025-03-01T00:00:00+08:00").tz_convert("UTC")
    want = score_period(served_bank.store, start, end, model)
    got = score_period_distributed(served_bank.store, start, end, model, client=client, partitions=3)
    assert len(want) > 1_000
    assert got["application_id"].tolist() == want["application_id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=1e-12)
    text = ["band", "action", "reason_codes", "reasons_zh", "reasons_en", "model_version"]
    pd.testing.assert_frame_equal(got[text], want[text])


def test_duanka_features_runs_on_an_existing_scheduler(client, served_bank, duanka_env, tmp_path):
    from typer.testing import CliRunner

    from duanka.cli.app import app

    local, dask = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    common = ["features", "--data", str(served_bank.store.root), "--as-of", "2025-02-01"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, "--out", str(local)]).exit_code == 0
    address = client.scheduler.address
    on_cluster = [*common, "--out", str(dask), "--engine", "dask", "--scheduler", address]
    unshared = runner.invoke(app, on_cluster)
    assert unshared.exit_code != 0 and "DUANKA_SCRATCH_DIR" in unshared.output
    scratch = tmp_path / "scratch"
    _use_scratch(duanka_env, scratch)
    result = runner.invoke(app, on_cluster)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(dask), pd.read_parquet(local), rtol=0, atol=1e-9)
    assert list(scratch.iterdir()) == []  # the run's stages are removed
    refused = runner.invoke(app, [*common, "--scheduler", address])
    assert refused.exit_code != 0


def _use_scratch(env: pytest.MonkeyPatch, folder) -> None:
    from duanka.data.config import get_settings

    folder.mkdir(exist_ok=True)
    env.setenv("DUANKA_SCRATCH_DIR", str(folder))
    get_settings.cache_clear()


def test_duanka_train_fits_on_the_cluster_with_lightgbm_dask(client, served_bank, duanka_env, tmp_path):
    import mlflow
    from typer.testing import CliRunner

    from duanka.cli.app import app
    from duanka.training.bundle import MODEL_NAME

    common = ["train", "--data", str(served_bank.store.root), "--as-of", "2025-03-01", "--n-boot", "10"]
    runner = CliRunner()
    refused = runner.invoke(app, [*common, "--fit", "dask"])
    assert refused.exit_code != 0 and "--fit dask needs --engine dask" in refused.output
    address = client.scheduler.address
    _use_scratch(duanka_env, tmp_path / "scratch")
    result = runner.invoke(app, [*common, "--engine", "dask", "--scheduler", address, "--fit", "dask"])
    assert result.exit_code == 0, result.output
    registry = served_bank.client()
    spread = registry.get_model_version_by_alias(MODEL_NAME, "challenger")
    local = registry.get_model_version(MODEL_NAME, served_bank.version)
    assert spread.version != local.version
    spread_run, local_run = (mlflow.get_run(v.run_id) for v in (spread, local))
    assert spread_run.data.params["fit"] == "lightgbm.dask"
    assert local_run.data.params["fit"] == "lightgbm"
    ap = "lightgbm.test_pr_auc"
    metrics = spread_run.data.metrics
    prevalence = metrics["test_positives"] / metrics["test_rows"]
    # It ranks: a useless model's average precision is the prevalence. How close the cluster fit
    # comes to the local fit is tested on 24,000 rows in test_dask_fit.py; this test set holds
    # too few mules for a tight comparison.
    assert metrics[ap] > 5 * prevalence, (metrics[ap], prevalence, local_run.data.metrics[ap])

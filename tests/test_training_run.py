"""A whole training run on a small generated bank: split, registry aliases, reproducibility."""

from __future__ import annotations

from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from duanka.data.config import Settings
from duanka.data.contract import APPLICATIONS, LABELS
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.training_set import TrainingSet, TrainingSummary
from duanka.training.approval import APPROVED, Review, record_review, report_sha256, utc_now
from duanka.training.bundle import MODEL_NAME, load_registered
from duanka.training.promote import promote
from duanka.training.report import build_report
from duanka.training.run import TrainConfig, out_of_time_parts, time_split, train
from duanka.training.split import TEST, TRAIN, VALID
from duanka.training.tracking import configure

AS_OF = pd.Timestamp("2025-03-01T00:00:00+08:00").tz_convert("UTC")
SIGNING_KEY = "duanka-test-signing-key-0123456789abcdef"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    bank = generate_bank(root / "bank", months=14, applications=30_000, seed=11, start=date(2024, 1, 1))
    store = EventStore(root / "store")
    keys = Pseudonymiser.from_secret(b"k" * 40)
    ingest_file(bank.applications, APPLICATIONS, store, keys)
    ingest_file(bank.labels, LABELS, store, keys)
    settings = Settings(models_dir=root / "models", model_signing_key=SIGNING_KEY)
    client = configure(settings)
    cfg = TrainConfig(as_of=AS_OF, n_boot=20, truth=bank.truth)
    first = train(store, cfg, settings, progress=False)
    return {"store": store, "settings": settings, "client": client, "cfg": cfg, "first": first}


def test_a_run_registers_a_challenger_whose_artifacts_verify(trained):
    client = trained["client"]
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert str(version.version) == trained["first"].model_version
    # signed with the configured key: a load that requires it takes the version
    loaded = load_registered(f"models:/{MODEL_NAME}@challenger", client, SIGNING_KEY.encode())
    assert loaded.bundle.booster_sha256 == version.tags["booster_sha256"]
    assert loaded.run_id == trained["first"].run_id
    assert {"comparison.csv", "evaluation_frame.parquet", "monthly.csv"} <= {
        a.path for a in client.list_artifacts(loaded.run_id)
    }


def test_the_pyfunc_scores_precomputed_features_like_the_bundle(trained):
    loaded = load_registered(f"models:/{MODEL_NAME}@challenger", trained["client"])
    frame = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=loaded.run_id, artifact_path="evaluation_frame.parquet")
    ).head(20)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@challenger")
    out = pyfunc.predict(frame.loc[:, loaded.bundle.feature_names].astype("float64"))
    X = frame.loc[:, loaded.bundle.feature_names].to_numpy(dtype=float)
    np.testing.assert_allclose(out["score"], loaded.bundle.score(X), rtol=0, atol=1e-12)


def test_the_same_data_config_and_seed_give_the_same_metrics(trained):
    again = train(trained["store"], trained["cfg"], trained["settings"], progress=False)
    first = trained["first"].evaluations["lightgbm"].point
    assert again.evaluations["lightgbm"].point == first
    assert again.model_version != trained["first"].model_version


def _approve(client: mlflow.MlflowClient, version: str, folder) -> None:
    """A model reviewer's approval of the version's report, built as `duanka report` builds it."""
    build_report(f"models:/{MODEL_NAME}/{version}", folder / f"report-{version}.html", client, progress=False)
    sha = report_sha256(client, client.get_model_version(MODEL_NAME, version).run_id)
    record_review(client, Review(version, APPROVED, "reviewer", utc_now(), "read the report", sha, "cli"))


def test_promotion_moves_champion_only_under_the_rule(trained, tmp_path):
    client, store, settings = trained["client"], trained["store"], trained["settings"]
    unreviewed = promote(store, settings)
    assert unreviewed.promoted is False and "has no approval" in unreviewed.reason  # review comes first
    _approve(client, unreviewed.challenger_version, tmp_path)
    first = promote(store, settings)
    assert first.promoted and "no champion" in first.reason
    assert promote(store, settings).promoted is False  # already champion: nothing to do
    twin = train(store, trained["cfg"], settings, progress=False)  # identical retrain, new version
    _approve(client, twin.model_version, tmp_path)  # approved, yet the rule still judges it
    decision = promote(store, settings)
    assert decision.promoted is False and "PR-AUC" in decision.reason  # a twin does not *beat* it
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == first.challenger_version
    assert promote(store, settings, force=True).promoted
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == twin.model_version


def _frame(rows: list[tuple[str, int, bool]]) -> TrainingSet:
    at = pd.to_datetime([r[0] for r in rows], utc=True)
    frame = pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(len(rows))],
            "applied_at": at,
            "label": [r[1] for r in rows],
            "label_mature": [r[2] for r in rows],
        }
    )
    return TrainingSet(frame, TrainingSummary(len(rows), 0, 0, 0, 0), AS_OF, 180, {})


def test_immature_labels_never_reach_any_part():
    ts = _frame(
        [
            ("2024-03-01", 1, True),
            ("2024-04-01", 0, True),  # train
            ("2024-06-20", 1, True),
            ("2024-07-01", 0, True),  # valid
            ("2024-08-20", 1, True),
            ("2024-08-21", 0, True),  # test
            ("2024-09-05", 1, False),
            ("2024-12-01", 1, False),  # immature: confirmed early, window open
        ]
    )
    parts = out_of_time_parts(ts, time_split(TrainConfig(as_of=AS_OF), Settings()))
    used = pd.concat(parts.values())
    assert used["label_mature"].all()
    assert len(used) == 6
    assert parts[TEST]["applied_at"].max() < AS_OF - pd.Timedelta(days=180)
    assert parts[TRAIN]["applied_at"].max() < parts[VALID]["applied_at"].min()

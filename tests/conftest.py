"""Shared fixtures: one small generated bank, ingested and trained once per test session.

``served_bank`` is what serving tests (and anyone else who needs a real
registered model) build on: a 30,000-application bank over 14 months, all but
its last :data:`HOLDOUT` applications ingested, a model trained as of the end
of the period and aliased ``champion``, and an online state already synced
with the store that tests copy instead of rebuilding.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from duanka.data.config import Settings
from duanka.data.contract import APPLICATIONS, LABELS
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.online import OnlineFeatureStore
from duanka.serving.admission import AdmissionPolicy
from duanka.serving.api import create_app
from duanka.serving.chain import chain_key
from duanka.serving.keys import KeyFile
from duanka.serving.lifecycle import ServiceConfig
from duanka.serving.model_source import ModelSource
from duanka.serving.state import ServingPaths, sync_online_state
from duanka.training.bundle import MODEL_NAME
from duanka.training.run import TrainConfig, train
from duanka.training.tracking import configure

AS_OF = pd.Timestamp("2025-03-01T00:00:00+08:00").tz_convert("UTC")
HOLDOUT = 300
# Tests about other things send the held-back applications (February 2025) in any order, and a
# few dated up to June 2025, to a scorer or service whose clock reads REPLAY_NOW (replay_clock)
# and that takes applications from REPLAY_TOLERANCE before it. The bounds themselves are
# tests/test_backdating.py's; `duanka serve` in a subprocess, which reads the real clock, is
# given DUANKA_BACKDATING_TOLERANCE_S=REPLAY_FROM_TODAY_S.
REPLAY_NOW = datetime(2025, 7, 1, tzinfo=UTC)
REPLAY_TOLERANCE = timedelta(days=400)
REPLAY_FROM_TODAY_S = str(int((datetime.now(UTC) - REPLAY_NOW + REPLAY_TOLERANCE).total_seconds()))


def replay_clock() -> datetime:
    """The clock of the scorers and services that replay the held-back applications."""
    return REPLAY_NOW


SECRET = b"k" * 40
# the audit key (DUANKA_AUDIT_CHAIN_KEY) of the test services and of the commands duanka_env runs
AUDIT_SECRET = "a" * 40


# What the environment said when the session began: a team's server, or (normally) nothing.
_SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def _restore_tracking_uri_variable() -> None:
    if _SESSION_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _SESSION_TRACKING_URI


@pytest.fixture(autouse=True, scope="module")
def _tracking_uri_variable_as_the_session_began() -> None:
    """Each test module starts with ``MLFLOW_TRACKING_URI`` as the session began.

    ``mlflow.set_tracking_uri`` exports the variable, and ``Settings()`` reads it
    before ``models_dir``: a module that sets the URI directly (test_report restores
    the previous one) would otherwise send the next module's runs into its registry.
    :func:`duanka.training.tracking.configure` itself leaves the variable as it found it.
    """
    _restore_tracking_uri_variable()


@dataclass(frozen=True)
class ServedBank:
    """A trained model on a small bank, and applications it has never seen.

    Attributes
    ----------
    root : Path
        Session folder holding everything below.
    store : EventStore
        The ingested history (every application but the holdout, every label).
    settings : Settings
        ``models_dir`` of the session's MLflow store.
    keys : Pseudonymiser
        The key the store was ingested with.
    version : str
        Registered version aliased ``champion`` (and ``challenger``).
    holdout_csv : Path
        The last :data:`HOLDOUT` applications, in the contract's CSV form, never ingested.
    holdout : list of dict
        The same rows as contract fields (str or None), in time order.
    """

    root: Path
    store: EventStore
    settings: Settings
    keys: Pseudonymiser
    version: str
    holdout_csv: Path
    holdout: list[dict]
    _online: Path

    uri = f"models:/{MODEL_NAME}@champion"

    def client(self) -> mlflow.MlflowClient:
        """Point MLflow at this bank's store (another module may have moved it) and return a client."""
        return configure(self.settings)

    def copy_store(self, folder: Path) -> EventStore:
        """A copy of the ingested store that a test may add to (a watchlist); the session's stays as it is."""
        shutil.copytree(self.store.root, folder, ignore=shutil.ignore_patterns("serving", ".lock"))
        return EventStore(folder)

    def service_config(
        self, source: ModelSource, paths: ServingPaths, store: EventStore | None = None
    ) -> ServiceConfig:
        """The service on ``paths`` with this bank's key and store (or ``store``), taking the held-back
        applications in any order (:func:`replay_clock`, :data:`REPLAY_TOLERANCE`)."""
        return ServiceConfig(
            source=source,
            model=source.load(),
            keys=self.keys,
            store=store or self.store,
            paths=paths,
            chain_key=chain_key(Settings(audit_chain_key=AUDIT_SECRET), self.keys),
            tolerance=REPLAY_TOLERANCE,
            clock=replay_clock,
            # tests about other things send faster than a branch would: no key's rate applies
            admission=AdmissionPolicy(rate_limit="1000000/second"),
        )

    def fresh_paths(self, folder: Path) -> ServingPaths:
        """Serving files in ``folder``, starting from a copy of the synced online state."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = ServingPaths(root=folder, decisions=folder / "decisions.db", keys=folder / "api_keys.json")
        shutil.copy(self._online / "online.db", paths.online)
        shutil.copy(self._online / "online.sync.json", paths.sync_marker)
        return paths


@pytest.fixture(scope="session")
def served_bank(tmp_path_factory: pytest.TempPathFactory) -> ServedBank:
    root = tmp_path_factory.mktemp("served")
    bank = generate_bank(root / "bank", months=14, applications=30_000, seed=23, start=date(2024, 1, 1))
    raw = pd.read_csv(bank.applications, dtype=str, keep_default_na=False)
    order = pd.to_datetime(raw["applied_at"], format="ISO8601", utc=True).argsort(kind="stable")
    raw = raw.iloc[order].reset_index(drop=True)
    history, holdout = raw.iloc[:-HOLDOUT], raw.iloc[-HOLDOUT:]
    history_csv, holdout_csv = root / "history.csv", root / "holdout.csv"
    history.to_csv(history_csv, index=False)
    holdout.to_csv(holdout_csv, index=False)

    store = EventStore(root / "store")
    keys = Pseudonymiser.from_secret(SECRET)
    ingest_file(history_csv, APPLICATIONS, store, keys)
    ingest_file(bank.labels, LABELS, store, keys)
    settings = Settings(models_dir=root / "models")
    client = configure(settings)
    result = train(store, TrainConfig(as_of=AS_OF, n_boot=20), settings, progress=False)
    client.set_registered_model_alias(MODEL_NAME, "champion", result.model_version)

    online_dir = root / "online"
    online_dir.mkdir()
    with OnlineFeatureStore(online_dir / "online.db") as online:
        sync_online_state(online, store, online_dir / "online.sync.json", keys.key_id)
    rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in holdout.to_dict("records")]
    return ServedBank(root, store, settings, keys, result.model_version, holdout_csv, rows, online_dir)


@pytest.fixture
def duanka_env(served_bank: ServedBank, monkeypatch: pytest.MonkeyPatch):
    """The environment a `duanka` command needs to find the served bank's registry and key."""
    from duanka.data.config import get_settings

    monkeypatch.setenv("DUANKA_MODELS_DIR", str(served_bank.settings.models_dir))
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
    monkeypatch.setenv("DUANKA_AUDIT_CHAIN_KEY", AUDIT_SECRET)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
    served_bank.client()  # the command pointed MLflow at the same store; leave it there


@contextmanager
def service_client(
    served_bank: ServedBank, folder: Path
) -> Iterator[tuple[TestClient, dict[str, str], ServingPaths]]:
    """The service on a fresh copy of the served bank's state, with the header of an all-branch key
    that may also confirm mule accounts."""
    paths = served_bank.fresh_paths(folder)
    token = KeyFile(paths.keys).create(labels=True)[1]
    config = served_bank.service_config(ModelSource(served_bank.uri, served_bank.client()), paths)
    with TestClient(create_app(config)) as client:
        yield client, {"Authorization": f"Bearer {token}"}, paths


@pytest.fixture(scope="module")
def dask_client():
    """A 2-worker local Dask cluster (one thread each), as CI runs the scale-out tests."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def model_versions(served_bank: ServedBank, tmp_path_factory: pytest.TempPathFactory):
    """A registry of its own with a champion and a challenger of the served bank, each with its
    report (tests/model_versions.py); put back as built before each test that asks for it."""
    from tests.model_versions import two_versions

    # built by whichever test asks first, perhaps after its module exported another registry's URI
    _restore_tracking_uri_variable()
    built = two_versions(served_bank.store, tmp_path_factory.mktemp("model-versions"), AS_OF)
    served_bank.client()  # the session's registry again for whoever runs next
    return built

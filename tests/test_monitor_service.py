"""``/monitor`` and the monitoring gauges of ``/metrics`` on a live service.

The service runs on a copy of :mod:`tests.monitor_records`' drifting record (branch B07 turns one
opening in five critical in its last week while one feature moves by three standard deviations),
its model registered with the reference the record's features were drawn beside. The page and
the gauges must both say act for both, and no branch may appear on ``/metrics``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from datetime import time as day_time

import mlflow
import pytest
from fastapi.testclient import TestClient

from duanka.data.config import Settings
from duanka.serving.api import create_app
from duanka.serving.audit import DecisionLog
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.review.sessions import ReviewSessions
from duanka.training.bundle import MODEL_NAME, sha256_text
from duanka.training.monitoring_plan import MONITORING_PLAN
from duanka.training.monitoring_reference import REFERENCE_FILE, REFERENCE_TAG
from duanka.training.tracking import configure
from tests import monitor_records as records

ROW = re.compile(
    r'<tr>\s*<td><a href="#(?P<key>\w+)">[^<]*</a></td>.*?'
    r'<span class="chip (?P<chip>\w+)">(?P<status>\w+)</span>',
    re.S,
)


def _registry_with_the_record_model(folder) -> mlflow.MlflowClient:
    """A registry whose version :data:`records.VERSION` is the record's booster with its reference
    (MLflow's process-wide registry is left pointing at it: the caller points it back)."""
    client = configure(Settings(models_dir=folder / "models"))
    text = records.reference().text()
    client.create_registered_model(MODEL_NAME)
    for number in range(1, int(records.VERSION) + 1):
        with mlflow.start_run() as run:
            mlflow.log_text(text, REFERENCE_FILE)
        model = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(MODEL_NAME, model, run_id=run.info.run_id)
        assert str(version.version) == str(number)
    client.set_model_version_tag(MODEL_NAME, records.VERSION, "booster_sha256", records.BOOSTER)
    client.set_model_version_tag(MODEL_NAME, records.VERSION, REFERENCE_TAG, sha256_text(text))
    return client


@pytest.fixture(scope="module")
def drifting_service(served_bank, tmp_path_factory):
    """The service on the drifting record as of its last day, and a signed-in model reviewer."""
    folder = tmp_path_factory.mktemp("monitor-service")
    paths = served_bank.fresh_paths(folder / "serving")
    built = records.build(folder / "built.db", drift=True)
    shutil.copy(built.path, paths.decisions)
    with DecisionLog(paths.decisions, chain_key=records.CHAIN_KEY) as log:
        # the record's applications are another bank's: the state is not to replay them at start
        with contextlib.closing(sqlite3.connect(paths.decisions)) as con:
            (last,) = con.execute("SELECT MAX(rowid) FROM responses").fetchone()
        log.state_synced(last)
    registry = _registry_with_the_record_model(folder)
    config = served_bank.service_config(
        ModelSource(f"models:/{MODEL_NAME}@champion", served_bank.client()), paths
    )
    noon = datetime.combine(records.AS_OF, day_time(4), tzinfo=UTC)  # noon in Beijing
    config = dataclasses.replace(
        config,
        source=ModelSource(f"models:/{MODEL_NAME}/{records.VERSION}", registry),
        chain_key=records.CHAIN_KEY,
        clock=lambda: noon,
    )
    keyfile = KeyFile(paths.keys)
    reviewer = keyfile.create(model_reviewer=True)[0]
    case_reviewer = keyfile.create(reviewer=True)[0]
    with TestClient(create_app(config)) as client:
        link = ReviewSessions(paths.root / "review.db", keyfile.active_key).issue_link(reviewer.key_id)
        signed = client.get(f"/models/sign-in?token={link}")
        assert signed.status_code == 200 and "Path=/monitor" in signed.headers["set-cookie"]
        yield client, _opened(client), paths, keyfile, case_reviewer
    served_bank.client()


def _opened(client: TestClient) -> str:
    """``/monitor``, once its run is done (the first run starts the worker process, which takes
    longer than the page waits: meanwhile it answers 503 and reloads itself)."""
    deadline = time.monotonic() + 180
    while True:
        answer = client.get("/monitor")
        if answer.status_code == 200:
            return answer.text
        assert answer.status_code == 503 and "Counting the record" in answer.text, answer.text[:500]
        assert time.monotonic() < deadline, "the first monitoring run did not finish in 3 minutes"
        time.sleep(1)


def test_the_page_shows_every_plan_row_with_a_status(drifting_service):
    _, page, _, _, _ = drifting_service
    rows = {m["key"]: m["status"] for m in ROW.finditer(page)}
    assert list(rows) == [item.key for item in MONITORING_PLAN]
    assert set(rows.values()) <= {"ok", "watch", "act"}


def test_the_branch_jump_and_the_drifting_feature_say_act_on_the_page(drifting_service):
    _, page, _, _, _ = drifting_service
    rows = {m["key"]: m["status"] for m in ROW.finditer(page)}
    assert rows["bands_branch"] == "act" and rows["feature_csi"] == "act"
    assert records.DRIFTING_BRANCH in page and records.DRIFTING_FEATURE in page


def test_the_gauges_say_act_with_the_band_shares_and_the_largest_psi_and_no_branch(drifting_service):
    client, _, _, _, _ = drifting_service
    exposed = client.get("/metrics").text
    gauge = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^(duanka_monitor_\S+) (\S+)$", exposed, re.M)
    }
    assert gauge["duanka_monitor_status"] == 2
    assert gauge["duanka_monitor_act_triggers"] >= 2
    assert gauge['duanka_monitor_largest_psi{of="features"}'] > 0.25
    assert {'duanka_monitor_band_share{band="critical"}', 'duanka_monitor_band_share{band="alert"}'} <= set(
        gauge
    )
    assert 0 < gauge['duanka_monitor_band_share{band="critical"}'] < 0.05
    monitor_lines = [line for line in exposed.splitlines() if line.startswith("duanka_monitor_")]
    assert not any("branch" in line or records.DRIFTING_BRANCH in line for line in monitor_lines)


def test_each_view_is_recorded_and_a_case_reviewer_is_refused(drifting_service):
    client, _, paths, keyfile, case_reviewer = drifting_service
    with contextlib.closing(sqlite3.connect(paths.decisions)) as con:
        (viewed,) = con.execute("SELECT COUNT(*) FROM events WHERE kind = 'monitor_viewed'").fetchone()
    assert viewed >= 1
    other = TestClient(client.app)
    link = ReviewSessions(paths.root / "review.db", keyfile.active_key).issue_link(case_reviewer.key_id)
    assert other.get(f"/review/sign-in?token={link}").status_code == 200
    assert other.get("/monitor").status_code == 401  # the case queue's cookie is not sent here
    other.cookies.set("duanka_monitor", other.cookies.get("duanka_review"))
    assert other.get("/monitor").status_code == 403


def test_without_a_session_the_page_says_how_to_sign_in(drifting_service):
    client, _, _, _, _ = drifting_service
    anonymous = TestClient(client.app)
    answer = anonymous.get("/monitor")
    assert answer.status_code == 401 and "duanka review link" in answer.text

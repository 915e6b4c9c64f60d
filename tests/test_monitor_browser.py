"""``/monitor`` as a model reviewer opens it, in Chromium, on a demo record: the served bank's last
stored month decided by its champion and recorded as ``duanka quickstart`` (and ``score
--record``) records it. Every row of the report's monitoring plan must be there with a status."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

import pandas as pd
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from duanka.serving.api import create_app
from duanka.serving.audit import DecisionLog
from duanka.serving.batch_job import decide_stored_period, record_decisions
from duanka.serving.keys import ApiKey, KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.state import ServingPaths
from duanka.training.bundle import MODEL_NAME
from duanka.training.monitoring_plan import MONITORING_PLAN
from tests.browser import LiveServer, chromium_fixture, sign_in_link  # noqa: F401
from tests.conftest import AS_OF


@dataclass
class Demo:
    url: str
    paths: ServingPaths
    keyfile: KeyFile
    reviewer: ApiKey
    recorded: int

    def link(self) -> str:
        return sign_in_link(self.url, self.paths, self.keyfile, self.reviewer.key_id, "/models")


@pytest.fixture(scope="module")
def demo(served_bank, tmp_path_factory) -> Iterator[Demo]:
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("monitor-browser") / "serving")
    source = ModelSource(f"models:/{MODEL_NAME}@champion", served_bank.client())
    config = served_bank.service_config(source, paths)
    start = AS_OF - pd.DateOffset(months=1)
    decided = decide_stored_period(served_bank.store, start, AS_OF, config.model, progress=False)
    with DecisionLog(paths.decisions, chain_key=config.chain_key) as log:
        recorded = record_decisions(log, decided, config.model, progress=False).recorded
    day_after = AS_OF.to_pydatetime() + timedelta(hours=12)
    keyfile = KeyFile(paths.keys)
    reviewer = keyfile.create(model_reviewer=True)[0]
    with LiveServer(create_app(replace(config, clock=lambda: day_after))) as server:
        yield Demo(server.url, paths, keyfile, reviewer, recorded)
    served_bank.client()


def test_a_model_reviewer_opens_the_monitoring_and_finds_every_plan_row_with_a_status(chromium, demo):
    assert demo.recorded > 500
    chromium.get(demo.link())
    WebDriverWait(chromium, 30).until(lambda driver: driver.current_url.endswith("/models"))
    chromium.find_element(By.LINK_TEXT, "模型监控 monitoring").click()
    # the first run starts the monitoring's worker: meanwhile the page says so and reloads itself
    WebDriverWait(chromium, 180).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "table.plan"))
    assert chromium.current_url.endswith("/monitor")
    rows = chromium.find_elements(By.CSS_SELECTOR, "table.plan tr")[1:]
    shown = [
        (r.find_element(By.TAG_NAME, "td").text, r.find_element(By.CSS_SELECTOR, ".chip").text) for r in rows
    ]
    assert [what for what, _ in shown] == [item.what for item in MONITORING_PLAN]
    assert all(status.lower() in ("ok", "watch", "act") for _, status in shown), shown
    facts = chromium.find_element(By.CSS_SELECTOR, "header .facts").text
    assert f"{demo.recorded:,}" in facts  # every recorded decision counted
    assert demo.reviewer.key_id in chromium.find_element(By.CSS_SELECTOR, ".served").text
    chromium.find_element(By.LINK_TEXT, "模型审核 model versions").click()
    WebDriverWait(chromium, 30).until(lambda driver: driver.current_url.endswith("/models"))

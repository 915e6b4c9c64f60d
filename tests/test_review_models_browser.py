"""Model review as a model reviewer does it, in Chromium: sign in through a link, read the versions
side by side, open the challenger's report, approve it with a note."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from duanka.serving.api import create_app
from duanka.serving.keys import ApiKey, KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.state import ServingPaths
from duanka.training.approval import review_of
from duanka.training.bundle import MODEL_NAME
from tests.browser import LiveServer, chromium_fixture, sign_in_link  # noqa: F401

NOTE = "recall at the bands holds; origin ratio as before"


@dataclass
class Registry:
    """A live service on the model versions' registry, and a model reviewer's key."""

    url: str
    paths: ServingPaths
    keyfile: KeyFile
    reviewer: ApiKey

    def link(self) -> str:
        return sign_in_link(self.url, self.paths, self.keyfile, self.reviewer.key_id, "/models")


@pytest.fixture(scope="module")
def registry(served_bank, model_versions, tmp_path_factory) -> Iterator[Registry]:
    paths = served_bank.fresh_paths(tmp_path_factory.mktemp("models-browser") / "serving")
    keyfile = KeyFile(paths.keys)
    client = model_versions.reset()
    config = served_bank.service_config(ModelSource(f"models:/{MODEL_NAME}@champion", client), paths)
    with LiveServer(create_app(config)) as server:
        yield Registry(server.url, paths, keyfile, keyfile.create(model_reviewer=True)[0])
    served_bank.client()


def test_a_model_reviewer_signs_in_reads_the_versions_and_approves_the_challenger(
    chromium, registry, model_versions
):
    sound = model_versions.sound
    chromium.get(registry.link())
    # the sign-in page moves on to the versions by itself
    WebDriverWait(chromium, 30).until(lambda driver: driver.current_url.endswith("/models"))
    table = chromium.find_element(By.ID, "versions")
    heads = [
        th.get_attribute("data-version")
        for th in table.find_elements(By.CSS_SELECTOR, "thead th[data-version]")
    ]
    assert heads[:2] == [model_versions.weak, sound]
    assert table.find_elements(By.CSS_SELECTOR, "td.differs"), (
        "the challenger's figures differ from the champion's"
    )

    form = chromium.find_element(By.ID, f"review-{sound}")
    form.find_element(By.LINK_TEXT, "report").click()
    WebDriverWait(chromium, 30).until(lambda driver: driver.current_url.endswith(f"/versions/{sound}/report"))
    assert "duanka" in chromium.title.lower()
    chromium.back()

    form = WebDriverWait(chromium, 30).until(lambda driver: driver.find_element(By.ID, f"review-{sound}"))
    form.find_element(By.NAME, "note").send_keys(NOTE)
    form.find_element(By.CSS_SELECTOR, "button[name=decision][value=approve]").click()
    done = WebDriverWait(chromium, 30).until(lambda driver: driver.find_element(By.ID, "done"))
    assert f"approved version {sound}" in done.text
    review = chromium.find_element(By.CSS_SELECTOR, f'td.review[data-version="{sound}"]')
    assert "approved by " + registry.reviewer.key_id in review.text and NOTE in review.text

    tagged = review_of(model_versions.client(), sound)
    assert tagged.approved and tagged.by == registry.reviewer.key_id and tagged.note == NOTE
    with sqlite3.connect(registry.paths.decisions) as con:
        (recorded,) = con.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'model_reviewed' AND key_id = ?",
            (registry.reviewer.key_id,),
        ).fetchone()
    assert recorded == 1

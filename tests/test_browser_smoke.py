"""The browser test setup works end to end: Chromium follows a link and submits a form to a live app.

When this fails, every browser test would fail for the same reason, so it names the setup
(``scripts/install-browser``, ``tests/browser.py``) rather than any page of ours.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import ASGIApp, LiveServer, chromium_fixture, live_server_fixture  # noqa: F401

WAIT_S = 5
NAME = "Zhang Wei 张伟"  # non-ASCII: the form's UTF-8 survives browser, server and page


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body>{body}</body></html>"
    )


def _app() -> FastAPI:
    """Three pages: a link, a form, the form's answer. The body is parsed by hand because
    FastAPI's ``Form`` needs python-multipart, which the project does not otherwise use."""
    app = FastAPI()

    @app.get("/")
    def home() -> HTMLResponse:
        return _page("Home", '<a id="to-form" href="/form">Open the form</a>')

    @app.get("/form")
    def form() -> HTMLResponse:
        return _page(
            "Form",
            '<form method="post" action="/greet">'
            '<input id="name" name="name"><button id="send" type="submit">Send</button></form>',
        )

    @app.post("/greet")
    async def greet(request: Request) -> HTMLResponse:
        name = parse_qs((await request.body()).decode())["name"][0]
        return _page("Greeting", f'<p id="greeting">Hello, {html.escape(name)}!</p>')

    return app


def test_link_then_form(chromium: Chrome, live_server: Callable[[ASGIApp], LiveServer]) -> None:
    server = live_server(_app())
    chromium.get(server.url + "/")
    wait = WebDriverWait(chromium, WAIT_S)

    chromium.find_element(By.ID, "to-form").click()
    wait.until(ec.title_is("Form"))
    chromium.find_element(By.ID, "name").send_keys(NAME)
    chromium.find_element(By.ID, "send").click()
    greeting = wait.until(ec.visibility_of_element_located((By.ID, "greeting")))

    assert greeting.text == f"Hello, {NAME}!"
    assert chromium.current_url == server.url + "/greet"

"""Helpers for browser tests: headless Debian Chromium driven by Selenium, and a live ASGI server.

Not a test module. A browser test imports the fixtures it uses by their Python names, which pytest
then knows under their fixture names::

    from tests.browser import chromium_fixture, live_server_fixture  # noqa: F401  (pytest fixtures)

    def test_page(chromium: Chrome, live_server: Callable[[ASGIApp], LiveServer]) -> None:
        chromium.get(live_server(app).url + "/")

The Python names differ from the fixture names so that a test's parameter does not redefine the
import (ruff F811). The browser is Debian's ``chromium`` with its ``chromedriver`` of the same
version, both installed by ``scripts/install-browser`` (which ``make test`` runs): CI reaches
package registries only, so nothing here may download a browser or driver.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import pytest
import uvicorn
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service

from duanka.serving.keys import KeyFile
from duanka.serving.review.sessions import ReviewSessions
from duanka.serving.state import ServingPaths

ASGIApp = Any  # a FastAPI/Starlette instance or any ASGI callable; uvicorn types it no closer
PAGE_LOAD_TIMEOUT_S = 30  # a page that never loads fails its test instead of hanging the suite
SERVER_START_TIMEOUT_S = 10.0
SERVER_STOP_TIMEOUT_S = 5.0
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",  # containers often give /dev/shm 64 MB; Chromium crashes on it
    "--window-size=1400,1000",  # wide enough for desktop layouts, same on every machine
)


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not on PATH.

    Raised rather than skipping the test: a browser test that skips when the browser is absent
    is a check that cannot fail.
    """


def _which(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise BrowserMissing(
            f"{program} is not on PATH; run scripts/install-browser "
            "(installs Debian's chromium and chromium-driver; make test runs it)"
        )
    return path


@contextmanager
def chromium_driver() -> Iterator[Chrome]:
    """A headless Chromium session, quit on exit even when the test fails.

    The explicit driver path in ``Service`` makes Selenium skip Selenium Manager, which would
    otherwise try to download a driver from the network.
    """
    options = ChromeOptions()
    options.binary_location = _which("chromium")
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    driver = Chrome(options=options, service=Service(executable_path=_which("chromedriver")))
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        yield driver
    finally:
        driver.quit()


def sign_in_link(
    url: str,
    paths: ServingPaths,
    keyfile: KeyFile,
    key_id: str,
    home: str,
    clock: Callable[[], datetime] | None = None,
) -> str:
    """A reviewer's one-time sign-in link to the pages under ``home`` (``/review``, ``/models``), as
    ``duanka review link`` issues it."""
    token = ReviewSessions(paths.root / "review.db", keyfile.active_key, clock).issue_link(key_id)
    return f"{url}{home}/sign-in?token={token}"


class LiveServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1 in a background thread, for a real browser.

    ``TestClient`` calls the app in-process; a browser needs a socket. Port 0 lets the kernel
    pick a free port, so parallel pytest-xdist workers never collide.
    """

    def __init__(self, app: ASGIApp) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)
        self.url = ""

    def start(self) -> Self:
        """Start serving and return once the app's startup has run and its socket listens."""
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the live server stopped while starting (its log says why)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the live server did not start within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Shut down gracefully; force it if open connections keep the server up too long."""
        if self._thread.ident is None:  # never started: nothing to stop
            return
        self._server.should_exit = True
        self._thread.join(SERVER_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(SERVER_STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(name="chromium")
def chromium_fixture() -> Iterator[Chrome]:
    """A fresh headless Chromium per test: no cookies or storage carried between tests."""
    with chromium_driver() as driver:
        yield driver


@pytest.fixture(name="live_server")
def live_server_fixture() -> Iterator[Callable[[ASGIApp], LiveServer]]:
    """Factory: ``live_server(app)`` serves ``app`` until the test ends; each test brings its app."""
    servers: list[LiveServer] = []

    def serve(app: ASGIApp) -> LiveServer:
        server = LiveServer(app)
        servers.append(server)  # before start: a server that fails to start is still stopped
        return server.start()

    yield serve
    for server in reversed(servers):
        server.stop()

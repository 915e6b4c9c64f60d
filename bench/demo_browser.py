"""What the benches' ``--screenshots`` modes share: the demo store served by ``duanka serve``, a
reviewer's key and one-time link, and headless Chromium (Debian's, scripts/install-browser).

Not a bench itself: ``bench_review.py`` and ``bench_monitor.py`` import it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import Chrome


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def duanka(*args: object) -> str:
    """Run a ``duanka`` verb; its output, or exit naming what failed."""
    done = subprocess.run(
        [sys.executable, "-m", "duanka.cli", *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"duanka {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Served:
    """The demo service's address, and the one-time sign-in link of the reviewer key made for it."""

    url: str
    key_id: str
    link: str


@contextlib.contextmanager
def served_demo(demo: Path, port: int, role: str) -> Iterator[Served]:
    """Serve the demo store with a new key of ``role`` (``--reviewer`` or ``--model-reviewer``) and
    its sign-in link; the service stopped and the key revoked after."""
    created = duanka("keys", "create", role, "--data", demo)
    key_id = re.search(r"--key-id (\w+)", created).group(1)
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "duanka.cli", "serve", "--data", str(demo), "--demo", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                    break
            if service.poll() is not None:
                raise SystemExit(f"duanka serve stopped: {service.stderr.read()}")
            time.sleep(0.5)
        printed = duanka("review", "link", "--key-id", key_id, "--data", demo, "--url", url)
        yield Served(url, key_id, printed.strip().splitlines()[-1])
    finally:
        service.terminate()
        service.wait(timeout=60)
        duanka("keys", "revoke", key_id, "--data", demo)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Chrome]:
    from selenium.webdriver import Chrome, ChromeOptions
    from selenium.webdriver.chrome.service import Service

    options = ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    driver = Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()

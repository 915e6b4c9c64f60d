"""The HTTP examples a user copies from README.md and docs/serving.md work as printed: each bash
block that calls the service on 127.0.0.1:8000 runs in bash, unchanged but for the port, against
a real ``duanka serve`` on a copy of the session's bank, with ``KEY`` and ``ADMIN_KEY`` from
``duanka keys create``. (The bare pyfunc's example on port 5001 is run by
``tests/test_api.py::test_mlflow_models_serve_scores_precomputed_features_like_the_bundle``.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duanka.training.bands import BLOCKED
from tests.conftest import AUDIT_SECRET, SECRET, ServedBank
from tests.factories import free_port, http_status, stop

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/serving.md")
SERVICE = "http://127.0.0.1:8000"
# A line the reader replaces with what a command printed them: the test's environment gives it.
PLACEHOLDER = re.compile(r"^\w+=paste-[\w-]+$")


def service_examples() -> list[tuple[str, str]]:
    """``(page, block)`` for every bash block of the pages that calls the service."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
            if f"curl -s {SERVICE}/" in block:
                found.append((page, block))
    return found


EXAMPLES = service_examples()


def test_the_pages_hold_the_examples_this_file_runs():
    pages = [page for page, _ in EXAMPLES]
    assert pages.count("README.md") >= 1 and pages.count("docs/serving.md") >= 2


def _duanka(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("duanka")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def running(served_bank: ServedBank, tmp_path_factory: pytest.TempPathFactory):
    """``duanka serve`` on a copy of the bank, on a free port, and the keys the examples use."""
    folder = tmp_path_factory.mktemp("documented")
    store = served_bank.copy_store(folder / "store")
    served_bank.fresh_paths(store.root / "serving")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_") and k != "MLFLOW_TRACKING_URI"}
    env |= {
        "DUANKA_PSEUDONYM_KEY": SECRET.decode(),
        "DUANKA_AUDIT_CHAIN_KEY": AUDIT_SECRET,
        "DUANKA_MODELS_DIR": str(served_bank.settings.models_dir),
        "DUANKA_DATA_DIR": str(store.root),
        "COLUMNS": "400",
    }
    keys = {
        "KEY": _duanka("keys", "create", env=env).strip().splitlines()[-1],
        "ADMIN_KEY": _duanka("keys", "create", "--admin", env=env).strip().splitlines()[-1],
    }
    port = free_port()
    log = folder / "serve.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [str(Path(sys.executable).with_name("duanka")), "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and service.poll() is None:
            if http_status(f"http://127.0.0.1:{port}/readyz") == 200:
                break
            time.sleep(0.5)
        assert http_status(f"http://127.0.0.1:{port}/readyz") == 200, log.read_text(errors="replace")[-3000:]
        yield port, env | keys
    finally:
        stop(service)


@pytest.mark.parametrize(("page", "block"), EXAMPLES, ids=[f"{p}#{i}" for i, (p, _) in enumerate(EXAMPLES)])
def test_a_documented_example_works_as_printed(running, page, block):
    port, env = running
    lines = [line for line in block.splitlines() if not PLACEHOLDER.match(line.strip())]
    script = "\n".join(lines).replace(SERVICE, f"http://127.0.0.1:{port}")
    # an answer other than 2xx fails the step (curl -s alone would print it and succeed)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", prelude + script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{page}:\n{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    answer = json.loads(done.stdout)
    assert answer["request_id"]
    if "/v1/score" in script:
        # the watchlist example (docs/serving.md) lists this applicant: blocked by rule after it
        assert answer["band"] in {"low", "medium", "high", "critical", BLOCKED}
        assert answer["reasons"] is not None

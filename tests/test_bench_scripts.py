"""Every ``bench/`` script still imports and parses its options after the code it measures moves.

The benches are run by hand, long after a refactoring; one that no longer imports is a figure
nobody can reproduce. This loads each in one fresh interpreter (as ``python bench/X.py`` does,
with ``bench/`` on ``sys.path``) and asks it for ``--help``: cheap, and it fails on a moved name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
LIBRARIES = {"demo_browser.py"}  # imported by the scripts' screenshot modes: no options of its own

_EACH_SCRIPT_HELP = """
import contextlib, importlib.util, io, json, pathlib, sys
sys.path.insert(0, ".")
found = {}
for path in sorted(pathlib.Path(".").glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    if path.name in LIBRARIES:
        found[path.name] = ["imported", ""]
        continue
    sys.argv, shown = [str(path), "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            module.main()
        found[path.name] = ["returned without parsing --help", ""]
    except SystemExit as stop:
        found[path.name] = [stop.code, shown.getvalue()]
print(json.dumps(found))
"""


def test_every_bench_script_imports_and_explains_its_options():
    run = f"LIBRARIES = {sorted(LIBRARIES)!r}\n{_EACH_SCRIPT_HELP}"
    done = subprocess.run([sys.executable, "-c", run], cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert set(found) == {p.name for p in BENCH.glob("*.py")}
    assert all(found.pop(name) == ["imported", ""] for name in LIBRARIES)
    for script, (code, shown) in found.items():
        assert code == 0, f"{script}: {code}"
        assert shown.startswith("usage:"), f"{script} printed no usage"

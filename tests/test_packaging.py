"""duanka installs one import name, and works beside a notebook's own ``data/`` and ``features.py``.

The design card keeps ``data/``, ``features/``, ``training/`` and ``serving/`` at the top of the
repository; installed, they are ``duanka.data`` and so on. A generic top-level ``data`` or
``features`` in site-packages would collide with a bank's shared analytics environment.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = {"data", "features", "training", "serving", "cli"}
SOURCE_FOLDERS = [*sorted(ROOMS), "tests", "bench"]


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the files git would commit (a ``build/`` folder left here could add stale ones)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        out,
    )
    [built] = out.glob("duanka-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> Path:
    """A new virtual environment holding the wheel; its dependencies are this environment's.

    The dependencies come through a ``.pth`` line rather than a second 1.4 GB install: a path
    added that way does not run the ``.pth`` files inside it, so this checkout's editable
    install (its import hook) is not visible there: only the wheel provides ``duanka``.
    """
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
    (Path(purelib.stdout.strip()) / "duanka-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        venv,
    )
    return python


def test_the_wheel_holds_one_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode()
        entry_points = archive.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"duanka"}
    assert top_level.split() == ["duanka"]
    assert "duanka = duanka.cli" in entry_points
    # Package data travels with the code: the report's template and style, the monitoring page's
    # template, and the reason texts.
    assert {
        "duanka/training/reasons.toml",
        "duanka/training/templates/report.html.j2",
        "duanka/training/templates/report_style.css",
        "duanka/serving/monitor/templates/monitor.html.j2",
    } <= set(names)


@pytest.mark.slow
def test_quickstart_runs_beside_a_notebooks_own_data_and_features(fresh_python, tmp_path):
    notebook = tmp_path / "notebook"
    (notebook / "data").mkdir(parents=True)
    # A notebook's own modules, first on sys.path under `python -m`: importing them is the collision.
    (notebook / "data" / "__init__.py").write_text("raise ImportError('the notebook data package')\n")
    (notebook / "features.py").write_text("raise ImportError('the notebook features.py')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUANKA_", "MLFLOW_"))}
    env["DUANKA_MODELS_DIR"] = str(notebook / "models")
    command = [str(fresh_python), "-m", "duanka.cli", "quickstart", "--out", "qs"]
    ran = _run([*command, "--applications", "20000", "--months", "12"], notebook, env)
    assert (notebook / "qs" / "scores.csv").stat().st_size > 0
    # MLflow's own registration lines are not said without --verbose; duanka says what it did
    assert "Successfully registered model" not in ran.stdout + ran.stderr
    assert "quickstart done" in ran.stdout
    assert (notebook / "qs" / "report.html").stat().st_size > 0
    # The registered model's code copy came from site-packages and loads as duanka.* too.
    load = (
        "import mlflow; from duanka.data.config import Settings; "
        "mlflow.set_tracking_uri(Settings().tracking_uri()); "
        "m = mlflow.pyfunc.load_model('models:/duanka@champion'); "
        "import duanka.training.bundle as b; print(type(m.unwrap_python_model()).__name__, b.__file__)"
    )
    loaded = _run([str(fresh_python), "-c", load], notebook, env).stdout.split()
    assert loaded[0] == "DuankaPyfunc"
    assert not Path(loaded[1]).is_relative_to(REPO), "the checkout leaked into the fresh environment"


def _bare_room_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {m}" for m in modules if m.split(".")[0] in ROOMS]
    return found


def test_no_module_imports_a_room_by_its_bare_name():
    sources = [
        p for folder in SOURCE_FOLDERS if (REPO / folder).is_dir() for p in (REPO / folder).rglob("*.py")
    ]
    assert len(sources) > 100
    assert [line for path in sources for line in _bare_room_imports(path)] == []

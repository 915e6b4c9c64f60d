"""The Dockerfile and compose.yaml, checked without a container engine.

These tests build no image (the sandbox they were written in reaches no container registry for
``python:3.12-slim``; docs/container.md says what was checked there with Podman). They check
what holds without one: every file the Dockerfile copies exists and is in the build context;
its health check asks the port its command serves on for ``/readyz``; its command and
compose.yaml's commands are verbs and options ``duanka`` accepts; the volumes agree; and the
image's entry command, run here with the image's environment, starts a service that turns ready.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
import typer.main

from duanka.cli.app import app
from tests.conftest import AUDIT_SECRET, SECRET, ServedBank
from tests.factories import free_port, http_status, stop

ROOT = Path(__file__).resolve().parent.parent
yaml = pytest.importorskip("yaml")  # PyYAML, which mlflow installs


@dataclass
class Stage:
    """One ``FROM`` stage of the Dockerfile: its instructions, in order, as (keyword, arguments)."""

    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name}: no {keyword}"
        return found[-1]


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """The Dockerfile's stages, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = [Stage(None)]  # ARGs before the first FROM
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            named = re.search(r"\bAS\s+(\S+)", args, flags=re.IGNORECASE)
            stages.append(Stage(named.group(1) if named else None))
        stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """An instruction's JSON (exec) form; the shell form would need a shell the user may not expect."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ``ENV key=value`` pairs."""
    env = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def runtime() -> Stage:
    return dockerfile_stages()[-1]


def serve_port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


def health_url(test: list[str]) -> str:
    """The URL a health check command asks (``python -c "...urlopen('URL'...)"``)."""
    found = re.findall(r"http://[^'\"\s]+", " ".join(test))
    assert len(found) == 1, test
    return found[0]


def parse_duanka(argv: list[str]) -> typer.Context:
    """Parse ``duanka ARGV`` as the installed command line would, without running it: an unknown
    verb or option, or a bad value, raises typer's usage error (a :class:`typer.TyperException`)."""
    command = typer.main.get_command(app)
    path = ["duanka"]
    args = list(argv)
    while hasattr(command, "commands"):  # a group (typer vendors click: no click.Group to test)
        assert args, f"{' '.join(path)} needs a verb"
        verb = args.pop(0)
        assert verb in command.commands, f"{' '.join(path)} has no verb {verb!r}"
        command = command.commands[verb]
        path.append(verb)
    return command.make_context(" ".join(path), args)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, /-separated) out of the build context.

    Close to Docker's rules (the last matching pattern wins, ``!`` re-includes, a pattern naming
    a folder keeps out what is under it, ``**`` is any number of folders); fnmatch's ``*`` also
    crosses ``/``, which can only make this stricter than Docker.
    """
    ignored = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern = pattern.strip("/")
        candidates = {pattern}
        if pattern.startswith("**/"):
            candidates.add(pattern[3:])
        candidates |= {c.replace("/**/", "/") for c in candidates}
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, c) for c in candidates for prefix in prefixes):
            ignored = not negated
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def duanka_invocations(service: dict) -> list[list[str]]:
    """The ``duanka`` command lines a compose service runs: its command after the image's
    entry point, or each ``duanka ...`` in the script of a ``/bin/sh -c`` entry point."""
    command = service.get("command", [])
    command = shlex.split(command) if isinstance(command, str) else list(command)
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return [command]
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    assert entrypoint == ["/bin/sh", "-c"], entrypoint
    tokens = shlex.split(" ".join(command))
    found, current = [], None
    for token in tokens:
        if token == "duanka":
            current = []
            found.append(current)
        elif token in {"||", "&&", ";", "|"}:
            current = None
        elif current is not None:
            current.append(token)
    return found


# ---------------------------------------------------------------- the Dockerfile


def test_the_build_is_multi_stage_and_installs_the_pinned_project_into_a_venv():
    stages = dockerfile_stages()
    names = [s.name for s in stages[1:]]
    assert names[0] == "builder" and len(names) >= 2, names
    builder, final = stages[1], stages[-1]
    installs = [r for r in builder.all("RUN") if "pip install" in r]
    assert any("-c constraints.txt ." in r and "/opt/venv/bin/pip" in r for r in installs), installs
    assert "/opt/venv" in " ".join(builder.all("RUN"))
    # the runtime takes the environment from the builder, nothing else of it
    assert final.all("COPY") == ["--from=builder /opt/venv /opt/venv"]
    default_base = dict(a.split("=", 1) for a in stages[0].all("ARG") if "=" in a)["PYTHON_IMAGE"]
    assert default_base == "python:3.12-slim"
    assert all(s.last("FROM").startswith("${PYTHON_IMAGE}") for s in stages[1:])


def test_every_source_the_build_reaches_is_an_argument_and_no_buildkit_feature_is_needed():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = dockerfile_stages()
    builder, runtime = stages[1], stages[-1]
    # a bank's package index and Debian mirror; empty means PyPI and deb.debian.org
    assert {'PIP_INDEX_URL=""', 'PIP_TRUSTED_HOST=""'} <= set(builder.all("ARG"))
    assert 'APT_MIRROR=""' in runtime.all("ARG")
    apt = next(r for r in runtime.all("RUN") if "apt-get install" in r)
    assert apt.index('"$APT_MIRROR"') < apt.index("apt-get update")
    # the legacy builder (and Podman) build it: no cache mounts, heredocs or syntax directive
    assert "--mount=" not in text and "<<" not in text and "# syntax" not in text


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    patterns = dockerignore_patterns()
    copied = 0
    for stage in dockerfile_stages():
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _destination = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not dockerignored(source.rstrip("/"), patterns), (
                    f"COPY {source}: .dockerignore drops it"
                )
                copied += 1
    assert copied >= 4
    # what the wheel is built from: every tracked file of the four packages reaches the build
    # (reasons.toml and the report template are package data, pyproject.toml)
    tracked = subprocess.run(
        ["git", "ls-files", "data", "features", "training", "serving", "cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "training/reasons.toml" in tracked
    dropped = [path for path in tracked if dockerignored(path, patterns)]
    assert not dropped, f".dockerignore drops files the package needs: {dropped}"


def test_dockerignore_keeps_out_environments_data_models_and_history():
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/store/applications/part-0.parquet",
        "data/quickstart/bank/applications.csv",
        "models/mlflow.db",
        "models/artifacts/1/model.txt",
        "serving/__pycache__/api.cpython-312.pyc",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        "tests/conftest.py",
        "secrets/pseudonym.key",
    ):
        assert dockerignored(path, patterns), path


def test_the_image_runs_duanka_serve_as_a_fixed_unprivileged_user_with_state_on_volumes():
    stage = runtime()
    user = stage.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {user}: a fixed, numeric, non-root uid"
    assert any(f"--uid {uid}" in r for r in stage.all("RUN")), "the user is created with that uid"

    volumes = [v for args in stage.all("VOLUME") for v in exec_form(args)]
    assert set(volumes) == {"/var/lib/duanka/data", "/var/lib/duanka/models"}
    # created and given to the user before VOLUME, or a fresh volume would be root's
    assert any("mkdir -p /var/lib/duanka/data /var/lib/duanka/models" in r for r in stage.all("RUN"))
    assert any(f"chown -R {uid}:{uid} /var/lib/duanka" in r for r in stage.all("RUN"))

    env = env_of(stage)
    assert env["DUANKA_DATA_DIR"] == "/var/lib/duanka/data"
    assert env["DUANKA_MODELS_DIR"] == "/var/lib/duanka/models"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # no secret in any layer: neither a secret nor its file set at build time
    secret_variables = ("KEY", "PASSWORD", "TOKEN", "SECRET", "MLFLOW_TRACKING_URI")
    baked = [k for k in env if any(word in k for word in secret_variables)]
    assert not baked, f"set at run time, not in the image: {baked}"

    assert exec_form(stage.last("ENTRYPOINT")) == ["duanka"]
    command = exec_form(stage.last("CMD"))
    assert command[:1] == ["serve"]
    assert command[command.index("--data") + 1] == "/var/lib/duanka/data"
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable through the published port
    assert stage.last("EXPOSE") == str(serve_port(command))


def test_the_command_is_one_duanka_serve_accepts_and_the_entry_point_is_the_project_script():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert exec_form(runtime().last("ENTRYPOINT"))[0] in scripts
    context = parse_duanka(exec_form(runtime().last("CMD")))
    assert context.params["port"] == 8000 and context.params["data"] == Path("/var/lib/duanka/data")
    with pytest.raises(typer.TyperException, match="--bogus"):  # the parse refuses what serve does not take
        parse_duanka(["serve", "--bogus"])


def test_the_health_check_asks_the_served_port_for_readyz_with_python_alone():
    stage = runtime()
    healthcheck = stage.last("HEALTHCHECK")
    options, _, test = healthcheck.partition(" CMD ")
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options, option
    test = exec_form(test)
    assert test[:2] == ["python", "-c"], "the slim image has no curl"
    url = health_url(test)
    assert url == f"http://127.0.0.1:{serve_port(exec_form(stage.last('CMD')))}/readyz"


# ---------------------------------------------------------------- compose.yaml


def test_compose_trains_the_demo_once_then_serves_it_from_the_same_volumes():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"quickstart", "serve"}
    volumes = set(exec_form(runtime().last("VOLUME")))
    for name, service in services.items():
        mounted = {mount.split(":", 1)[1]: mount.split(":", 1)[0] for mount in service["volumes"]}
        assert set(mounted) == volumes, f"{name}: mounts {mounted}, the image's volumes are {volumes}"
        assert set(mounted.values()) <= set(spec["volumes"]), name
        assert service["build"] == "." and service["image"] == services["serve"]["image"]
    assert services["quickstart"]["volumes"] == services["serve"]["volumes"]

    [quickstart] = duanka_invocations(services["quickstart"])
    [serve] = duanka_invocations(services["serve"])
    assert quickstart[0] == "quickstart" and serve[0] == "serve"
    out = parse_duanka(quickstart).params["out"]
    served = parse_duanka(serve).params
    # quickstart writes its store to OUT/store (serving.quickstart.DemoPlan); serve reads that store
    assert served["data"] == out / "store"
    assert served["demo"], "the quickstart store carries the public demo key: served only with --demo"
    assert served["host"] == "0.0.0.0" and served["port"] == 8000
    assert any(str(out).startswith(v + "/") for v in volumes), "the demo store lies in a volume"
    # skipped when its last output exists: a second `up` does not train another version
    script = " ".join(services["quickstart"]["command"])
    assert f"test -f {out}/scores.csv ||" in script

    env = services["serve"]["environment"]
    assert env["DUANKA_DATA_DIR"] == str(served["data"])  # `keys create` in the container finds the store
    assert env["DUANKA_MODELS_DIR"] == env_of(runtime())["DUANKA_MODELS_DIR"]
    assert services["quickstart"]["environment"] == env  # quickstart registers where serve loads

    assert services["serve"]["depends_on"] == {"quickstart": {"condition": "service_completed_successfully"}}
    assert services["serve"]["ports"] == [f"127.0.0.1:{served['port']}:{served['port']}"]
    assert services["quickstart"]["healthcheck"] == {"disable": True}
    test = services["serve"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:] == exec_form(runtime().last("HEALTHCHECK").partition(" CMD ")[2])
    assert health_url(test) == f"http://127.0.0.1:{served['port']}/readyz"


def test_compose_sets_no_secret():
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            assert not variable.endswith("_KEY") and "TRACKING_URI" not in variable, (name, variable)
    assert "PSEUDONYM_KEY" not in text.replace("# ", "")


# ---------------------------------------------------------------- the entry command, run here


@pytest.mark.slow
def test_the_entry_command_starts_the_service_outside_a_container(served_bank: ServedBank, tmp_path: Path):
    """ENTRYPOINT + CMD with the image's ENV, the volumes replaced by folders here, on a free port.

    The data volume holds a copy of the session's trained store with its online state synced (a
    restarted container's case; a first start syncs it, which takes longer); the models volume is
    the session's MLflow store. The pseudonym key comes from the environment, as ``docker run -e``
    or a secret file would give it.
    """
    stage = runtime()
    volumes = {
        "/var/lib/duanka/data": tmp_path / "volumes" / "data",
        "/var/lib/duanka/models": served_bank.settings.models_dir,
    }
    served_bank.copy_store(volumes["/var/lib/duanka/data"])
    served_bank.fresh_paths(volumes["/var/lib/duanka/data"] / "serving")

    def here(value: str) -> str:
        for inside, outside in volumes.items():
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    port = free_port()
    command = [here(arg) for arg in exec_form(stage.last("ENTRYPOINT")) + exec_form(stage.last("CMD"))]
    command[command.index("--port") + 1] = str(port)
    executable = Path(sys.executable).with_name(command[0])
    assert executable.exists(), f"{command[0]} is not installed beside {sys.executable}"
    command[0] = str(executable)

    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_") and k != "MLFLOW_TRACKING_URI"}
    env |= {k: here(v) for k, v in env_of(stage).items() if k != "PATH"}
    env["DUANKA_PSEUDONYM_KEY"] = SECRET.decode()
    env["DUANKA_AUDIT_CHAIN_KEY"] = AUDIT_SECRET  # required beside it outside a demo
    env["COLUMNS"] = "400"  # rich wraps its lines at 80 columns off a terminal: keep paths whole to match
    workdir = tmp_path / "workdir"  # the image's WORKDIR: nothing may depend on the repository
    workdir.mkdir()

    test = exec_form(stage.last("HEALTHCHECK").partition(" CMD ")[2])
    check = [sys.executable, *test[1:]]
    check[-1] = check[-1].replace(":8000/", f":{port}/")
    assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0, "healthy with no service"

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        service = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = health_url(check)
        deadline = time.monotonic() + 120  # a loaded two-core machine; normally a few seconds
        status = None
        while time.monotonic() < deadline and service.poll() is None:
            status = http_status(url)
            if status == 200:
                break
            time.sleep(0.5)
        output = log.read_text(encoding="utf-8", errors="replace")
        assert status == 200, f"/readyz answered {status}, exit {service.poll()}:\n{output[-3000:]}"
        # the image's own health check command, against the running service
        done = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert f"on http://0.0.0.0:{port}" in output
        assert str(volumes["/var/lib/duanka/data"] / "serving") in output  # its state lies in the volume
    finally:
        stop(service)

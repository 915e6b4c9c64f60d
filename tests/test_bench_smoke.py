"""Every ``bench/`` script runs end to end at a tiny size and prints the figures it exists for.

tests/test_bench_scripts.py proves each script imports and parses its options; a bench whose
code path broke (a phase that now fails, a figure it can no longer compute) still passes that.
Here each one is run as a reader runs it, ``python bench/X.py ...`` from the repository root,
at the smallest size that still takes its whole path, and the lines carrying its figures are
looked for. The numbers themselves are not judged: at these sizes they mean nothing.

Under the default configuration: the environment is inherited less its ``DUANKA_`` and
``MLFLOW_`` variables (a developer's settings or a team's tracking server must not change
what runs, nor receive its runs), with ``TMPDIR`` in a pytest folder, so that what a script
puts in a temporary folder of its own (a bank, a registry) is removed with the others.
Everything a script writes, generated raw identifiers included, stays in pytest's folders.

Inputs are made once per module by other bench scripts, as their docstrings tell a reader:
``bench_quality.py`` leaves the generated world whose bank and store ``reference_model.py``,
``bench_label_policies.py``, ``bench_band_refresh.py`` and ``bench_reviewed_negatives.py`` read;
``bench_serve.py --prepare-only`` leaves the bank, store and registered model that ``bench_serve.py``,
``bench_load.py`` and ``bench_clients.py`` reuse (``--work``), and whose registry
``bench_explain.py`` explains. Every seed is a script's own fixed default (only the
lightgbm.dask fit varies from run to run, and no figure's value is asserted). The module takes
about two minutes on two quiet cores; bench_serve.py (two services) and bench_clients.py (the
settings' 10 s header and body deadlines) are half of it.

Not run: ``bench/screenshot_report.sh`` drives a headless Chromium, which is no dependency of
the project (it is a look by eye at a report, with no figure to check). ``bench_features.py
--engines`` compares DuckDB with polars, not a dependency either: run only where installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TIMEOUT_S = 300  # per script; bench_serve waits 600 s for a service that never gets ready
# needs a browser (module docstring); what the screenshot modes import
NOT_RUN = {"screenshot_report.sh", "demo_browser.py"}
SMOKED = {
    "bench_band_refresh.py",
    "bench_clients.py",
    "bench_dask_fit.py",
    "bench_distributed.py",
    "bench_explain.py",
    "bench_features.py",
    "bench_generate.py",
    "bench_label_policies.py",
    "bench_load.py",
    "bench_monitor.py",
    "bench_quality.py",
    "bench_review.py",
    "bench_reviewed_negatives.py",
    "bench_scenarios.py",
    "bench_serve.py",
    "bench_train.py",
    "reference_model.py",
}
# The world bench_quality generates (at 5,000 applications its first backtest month's validation
# months hold no confirmed mule), and the shared serving folder: the state's applications, the
# model's own bank, and the requests held back (bench_load and bench_clients reuse these 1,000).
WORLD = "default-7"
QUALITY_APPLICATIONS = "15000"
STATE = ("--history", "3000", "--train-applications", "12000")
REQUESTS = ("--requests", "1000")
NUMBER = r"[\d,]+(?:\.\d+)?"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TMPDIR of every script run here."""
    return tmp_path_factory.mktemp("bench-tmp")


def bench(script: str, *args: object, scratch: Path, env: dict[str, str] | None = None) -> str:
    """Run ``python bench/<script> <args>`` from the repository root; its standard output.

    Fails, with the end of both streams, unless it exits 0.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DUANKA_", "MLFLOW_"))}
    environment.update(TMPDIR=str(scratch), **(env or {}))
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *map(str, args)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"bench/{script} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
        f"--- stderr\n{done.stderr[-6000:]}"
    )
    return done.stdout


def assert_lines(out: str, *patterns: str) -> None:
    """Each regular expression matches somewhere in ``out`` (a figure line the bench prints)."""
    missing = [p for p in patterns if not re.search(p, out, re.MULTILINE)]
    assert not missing, f"no line matching {missing} in:\n{out[-4000:]}"


@pytest.fixture(scope="module")
def quality_work(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> tuple[Path, str]:
    """bench_quality.py on one small world: its --work folder (WORLD/bank, WORLD/store) and output."""
    work = tmp_path_factory.mktemp("bench-quality")
    out = bench(
        "bench_quality.py",
        *("--worlds", WORLD, "--applications", QUALITY_APPLICATIONS, "--work", work),
        scratch=scratch,
    )
    return work, out


@pytest.fixture(scope="module")
def serve_work(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> Path:
    """The --work folder bench_serve, bench_load and bench_clients share: bank, store, model."""
    work = tmp_path_factory.mktemp("bench-serve")
    bench("bench_serve.py", "--work", work, *STATE, *REQUESTS, "--prepare-only", scratch=scratch)
    assert (work / "requests.csv").exists() and (work / "models" / ".trained").exists()
    return work


def test_every_bench_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == SMOKED | NOT_RUN


def test_bench_generate_writes_a_tiny_bank_and_reports_its_speed(tmp_path, scratch):
    out = bench(
        "bench_generate.py",
        *("--applications", 2000, "--months", 2, "--out", tmp_path / "bank"),
        scratch=scratch,
    )
    assert_lines(
        out,
        r"^rows\s+2,000$",
        rf"^mules\s+{NUMBER}$",
        rf"^seconds\s+{NUMBER}$",
        rf"^rows/s\s+{NUMBER}$",
        rf"^peak RSS MiB\s+{NUMBER}$",
        rf"^files MiB\s+{NUMBER}$",
    )


def test_bench_scenarios_measures_what_each_scenario_changes_in_its_rings(scratch):
    out = bench(
        "bench_scenarios.py",
        *("--scenarios", "default", "sent_alone", "--applications", 5000, "--months", 3),
        scratch=scratch,
    )
    assert_lines(
        out,
        r"^\| measure \| default \| sent_alone \|$",
        rf"^\| ring openings with an escort_id \| {NUMBER} \| {NUMBER} \|$",
        rf"^\| home counties per ring \(median\) \| {NUMBER} \| {NUMBER} \|$",
    )


def test_bench_features_times_the_offline_build_and_online_latency_on_a_tiny_state(scratch):
    out = bench("bench_features.py", "--rows", 2000, "--history", 2000, "--queries", 300, scratch=scratch)
    assert_lines(
        out,
        rf"^offline\s+2,000 applications\s+build\s+{NUMBER} s \({NUMBER} rows/s\)",
        r"peak RSS of the process [\d.]+ GiB, \d+ features",
        r"^online\s+history 2,000 events .* 300 more timed",
        *(
            rf"^\s+{name}\s+{clock}\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms\s+p99\.9"
            for name in ("features_for", "add_application")
            for clock in ("wall", "cpu")
        ),
        r"features_for cpu p99: [\d.]+ ms for the [\d,]+ events off the hub, [\d.]+ ms for the \d+ on it",
    )


@pytest.mark.skipif(importlib.util.find_spec("polars") is None, reason="polars is not installed")
def test_bench_features_compares_duckdb_with_polars_where_polars_is_installed(scratch):
    out = bench("bench_features.py", "--engines", "--rows", 2000, "--history", 0, scratch=scratch)
    assert_lines(out, r"duckdb\s+[\d.]+ s\s+polars\s+[\d.]+ s\s+same values: True")


def test_bench_dask_fit_fits_locally_and_on_a_two_worker_cluster(scratch):
    out = bench("bench_dask_fit.py", "--rows", 5000, "--workers", 2, scratch=scratch)
    assert_lines(
        out,
        r"^5,000 rows x 63 features",
        r"^local fit \(2 threads\):\s+[\d.]+ s, test AP [\d.]+, round \d+ \(early stopping\)",
        r"^lightgbm\.dask \(2 workers x 1 thread\):\s+[\d.]+ s, test AP [\d.]+, round \d+ of \d+",
    )


def test_bench_distributed_builds_features_on_a_local_cluster_as_one_machine_does(scratch):
    out = bench("bench_distributed.py", "--rows", 3000, "--compare", scratch=scratch)
    assert_lines(
        out,
        r"^generated 3,000 applications",
        rf"^dask, 2 workers x 1 thread, \d+ partitions: 3,000 rows of features in [\d.]+ s "
        rf"\({NUMBER} rows/s\)",
        r"^\s+\w+\s+tasks\s+\d+\s+compute\s+[\d.]+ s\s+max\s+[\d.]+ s\s+mean\s+[\d.]+ s$",
        r"worker compute in all: .* s per million",
        r"peak RSS tcp://",
        r"peak RSS client: [\d.]+ GiB",
        r"stage folder peak on disk",
        r"^single machine build_features: [\d.]+ s",
        r"^identical: True$",
    )


def test_bench_train_times_every_stage_of_a_tiny_training_run(tmp_path, scratch):
    out = bench("bench_train.py", "--applications", 8000, "--work", tmp_path / "train", scratch=scratch)
    stages = (
        "generate",
        "ingest applications",
        "ingest labels",
        "point-in-time features",
        "split \\+ known labels",
        "evidence fit",
        "refit",
        "calibration \\+ bands",
    )
    assert_lines(
        out,
        *(rf"^{stage}\s+[\d.]+\s+[\d.]+\s+([\d.]+ GiB|n/a)\s+[\d.]+ GiB$" for stage in stages),
        r"^training set: [\d,]+ rows \([\d,]+ mature, [\d,]+ mature mules",
        r"^evidence: train .* best iteration \d+",
        r"^refit \(delay-weighted\): .* \d+ rounds",
        r"^calibration: .* bands on [\d,]+ rows",
        r"^fit \(evidence \+ refit \+ calibration\): [\d.]+ s \(target at 10M: < 300 s\)",
    )


def test_bench_quality_sets_duanka_beside_the_reference_on_a_tiny_world(quality_work):
    _, out = quality_work
    ci = r"[\d.]+ \[[\d.]+, [\d.]+\]"
    assert_lines(
        out,
        r"^\| world \| seed \| scored \| mules \| shipped recall@1% \| reference recall@1% \|",
        rf"^\| default \| 7 \| [\d,]+ \| [\d,]+ \| {ci} \| {ci} \| {ci} \| [\d.]+ \| [\d.]+ \|",
        r"^`\.venv/bin/python bench/bench_quality\.py --worlds default-7 .*`, .*wall time",
        rf"^{WORLD}: generate \+ ingest \d+ s, duanka backtest \d+ s, reference backtest \d+ s; "
        r"truth mules scored: .*escort_ring \d+",
    )


def test_reference_model_backtests_a_generated_bank_month_by_month(quality_work, scratch):
    work, _ = quality_work
    out = bench(
        "reference_model.py",
        *("--data", work / WORLD / "bank", "--from", "2025-01-01", "--to", "2025-07-01"),
        scratch=scratch,
    )
    assert_lines(
        out,
        r"^period\s+apps\s+mules\s+recall@1%\s+PR-AUC$",
        *(rf"^2025-0{m}-01 00:00:00\s+{NUMBER}\s+\d+\s+[\d.]+\s+([\d.]+|nan)$" for m in range(1, 7)),
        r"^backtest took [\d.]+ s$",
    )


def test_bench_label_policies_backtests_each_label_policy_on_a_tiny_world(quality_work, scratch):
    work, _ = quality_work
    out = bench(
        "bench_label_policies.py",
        *("--work", work, "--worlds", WORLD, "--n-boot", 10),
        scratch=scratch,
    )
    assert_lines(
        out,
        *(rf"^{WORLD} {policy}: [\d.]+ in \d+ s$" for policy in ("mature", "delay-weighted", "horizon")),
        r"label policies, rolling backtest",
        rf"{WORLD}\W+evidence",
    )


def test_bench_reviewed_negatives_sets_three_trainings_side_by_side_on_a_tiny_world(quality_work, scratch):
    work, _ = quality_work
    out = bench(
        "bench_reviewed_negatives.py",
        *("--work", work, "--worlds", WORLD, "--applications", QUALITY_APPLICATIONS),
        *("--warmup-months", 1, "--scored-months", 1, "--n-boot", 10),
        scratch=scratch,
    )
    cell = r"[+-]?[\d.]+ \[[+-]?[\d.]+, [+-]?[\d.]+\]"
    assert_lines(
        out,
        *(rf"^\| {WORLD} \| {row}[^|]* \| {cell}" for row in ("A: ", "B: ", "C: ", "C - B", "B - A")),
        rf"^{WORLD}: {NUMBER} scored, \d+ mules; {NUMBER} referred, {NUMBER} disposed; \d+ s$",
        r"^  as of 2025-04-01: \d+ dispositions known \(\d+ cleared\); "
        r"refit weight A [\d,]+, B [\d,]+, C [\d,]+$",
    )


def test_bench_band_refresh_sets_refreshed_cuts_beside_the_fixed_ones_month_by_month(quality_work, scratch):
    work, _ = quality_work
    out = bench("bench_band_refresh.py", "--store", work / WORLD / "store", scratch=scratch)
    for share in ("critical", "alert"):
        assert_lines(out, rf"^{share} share by month \(window 0: the shipped fixed cuts;")
    months = [rf"^2025-0{m}-01\s+[\d.]+\s+[\d.]+\s+[\d.]+$" for m in range(1, 7)]
    for table in out.split(" share by month")[1:]:  # critical, then alert
        assert_lines(table, r"^window\s+0\s+14\s+30$", *months, r"^pooled\s+[\d.]+\s+[\d.]+\s+[\d.]+$")


def test_bench_explain_times_explanations_of_the_registered_model(serve_work, scratch):
    tracking = f"sqlite:///{serve_work / 'models' / 'mlflow.db'}"
    out = bench(
        "bench_explain.py",
        *("--model", "models:/duanka@champion", "--rows", 50, "--repeats", 1),
        scratch=scratch,
        env={"MLFLOW_TRACKING_URI": tracking},
    )
    row = r"\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$"
    assert_lines(
        out,
        r"^models:/duanka@champion v\d+: [\d,]+ train / [\d,]+ test rows$",
        r"^shape\s+trees\s+depth\s+PR-AUC\s+contrib ms\s+explain ms\s+batch ms$",
        rf"^shipped \(max_depth 6, 31 leaves\){row}",
        rf"^deeper \(unlimited depth, 63 leaves\){row}",
    )


def test_bench_serve_runs_every_phase_at_a_tiny_size(serve_work, scratch):
    # 200/s for 4 s: 800 requests, the 700 the one-at-a-time phase needs (200 warm-up, 500
    # timed) and 100 at the fixed rate; then 2 s flat out, mlflow models serve, and the batch.
    out = bench(
        "bench_serve.py",
        *("--work", serve_work, *STATE, *REQUESTS, "--stage-samples", 100),
        *("--rate", 200, "--seconds", 4, "--batch-rows", 2000),
        scratch=scratch,
    )
    percentiles = r"p50\s+[\d.]+ ms\s+p99\s+[\d.]+ ms\s+max\s+[\d.]+ ms"
    stages = ("prepare", "features", "score", "reasons", "record", "audit")
    assert_lines(
        out,
        r"^state: 3,000 applications of history",
        r"^stages of one decision, in process, 100 applications:$",
        *(rf"^\s+{stage}\s+{percentiles}$" for stage in stages),
        rf"^\s+whole\s+{percentiles}\s+\(Scorer\.score_application\)$",
        rf"^duanka serve, /v1/score one at a time, 500 requests: {percentiles}$",
        rf"^duanka serve, /v1/score at 200 requests/s, 100 requests: {percentiles}; \d+ failed",
        rf"^duanka serve, flat out with 8 callers: {NUMBER} requests/s$",
        rf"^mlflow models serve, precomputed features \(dataframe_split\), one at a time, 500 requests: "
        rf"{percentiles}$",
        r"^latency ratio \(p50\): duanka serve .* = [\d.]+$",
        r"^batch: point-in-time features for 3,000 applications in [\d.]+ s$",
        rf"^batch: plain scores and bands, 2,000 rows: [\d.]+ s = {NUMBER} rows/s$",
        rf"^batch: scores with reasons for medium or higher \({NUMBER} rows\), 2,000 rows: .* rows/s$",
    )


def test_bench_load_runs_end_to_end_at_a_tiny_rate(serve_work, scratch):
    out = bench(
        "bench_load.py",
        *("--work", serve_work, *STATE, "--rate", 20, "--seconds", 3, "--flat-seconds", 2),
        scratch=scratch,
    )
    assert_lines(
        out,
        r"^duanka serve, POST /v1/score at 20/s for 3 s: 60 requests$",
        r"^\s+answered 200: \d+; errors: \d+ ",
        r"^\s+latency p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms$",
        r"^\s+over 20 ms: \d+ requests in \d+ distinct seconds$",
        r"^\s+server-side /v1/score: \d+ of \d+ over 20 ms$",
        r"^\s+within 10 ms: [\d.]+%$",
        r"^\s+server GC pauses \(generation: count, seconds\): ",
        r"^\s+server CPU: [\d.]+ s, [\d.]+ ms per request$",
        r"^\s+RSS start \d+ MiB, end \d+ MiB$",
        r"^\s+flat out with 8 callers, one key each: [\d,]+ requests/s \([\d,]+ in [\d.]+ s\)$",
    )


def test_bench_clients_times_slow_and_greedy_clients_under_the_default_limits(serve_work, scratch):
    # The settings' own admission limits: half-sent requests are held until the 10 s header and
    # body deadlines, so this run takes at least those 10 s and the 3 s flat out.
    out = bench(
        "bench_clients.py",
        *("--work", serve_work, *STATE),
        scratch=scratch,
    )
    held = r": 20 connections, closed after median [\d.]+ s, max [\d.]+ s; \{'HTTP/1\.1 "
    assert_lines(
        out,
        r"^duanka serve with the default admission limits, rate limit the settings' default:$",
        r"^\s+an honest score while 60 slow connections are open: 200 in [\d.]+ ms$",
        rf"^\s+half-sent headers{held}",
        rf"^\s+body shorter than Content-Length{held}",
        rf"^\s+unknown key, 1 MB announced, none sent{held}401 Unauthorized': 20\}}$",
        r"^\s+200 scores at once: \d+ answered 200, p50 \d+ ms, max \d+ ms$",
        r"^\s+one key, 8 connections flat out for 3 s: \{200: \d+",
    )


def test_bench_monitor_times_a_first_run_and_the_runs_after_it(tmp_path, scratch):
    out = bench(
        "bench_monitor.py",
        *("--decisions", 6000, "--new", 500, "--days", 30, "--branches", 12, "--work", tmp_path / "monitor"),
        scratch=scratch,
    )
    run = rf"count\s+{NUMBER} s\s+plan\s+{NUMBER} s\s+page {NUMBER} s\s+total\s+{NUMBER} s\s+"
    assert_lines(
        out,
        rf"^record: 5,500 decisions over 30 days at 12 branches, {NUMBER} MiB, {NUMBER} mules "
        r"\(built in \d+ s\)$",
        rf"^cold\s+{run}\(5,500 decisions read; status (ok|watch|act)\)$",
        rf"^warm, nothing new\s+{run}\(0 decisions read; status (ok|watch|act)\)$",
        rf"^warm, 500 new\s+{run}\(500 decisions read; status (ok|watch|act)\)$",
        rf"^sidecar: {NUMBER} MiB; record: {NUMBER} MiB$",
    )


def test_bench_review_times_the_queue_and_a_ring_drawn(tmp_path, scratch):
    out = bench(
        "bench_review.py",
        *("--open-cases", 400, "--ring", 40, "--repeats", 1, "--work", tmp_path / "review"),
        scratch=scratch,
    )
    assert_lines(
        out,
        rf"^queue: 400 open cases in {NUMBER} rings, {NUMBER} pages, in a record of 2,000 decisions$",
        rf"^queue page, cold \(cases read and grouped, HTML\):\s+{NUMBER} ms$",
        rf"^queue page, warm \(record unchanged, HTML\):\s+{NUMBER} ms$",
        rf"^case graph: 40 applications read, laid out and drawn:\s+{NUMBER} ms$",
    )

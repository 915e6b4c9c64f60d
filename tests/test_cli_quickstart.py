"""``duanka quickstart``: the demo's plan (folders and periods) and its printer's steps."""

from __future__ import annotations

import inspect
from datetime import date
from pathlib import Path

import pandas as pd

from duanka.cli.quickstart import QuickstartPrinter
from duanka.serving.quickstart import DemoPlan, QuickstartSteps


def test_the_demo_trains_as_of_the_end_of_its_bank_and_scores_the_month_before():
    plan = DemoPlan(Path("qs"), applications=20_000, months=18, seed=7, start=date(2024, 1, 1))
    assert plan.as_of == pd.Timestamp("2025-07-01", tz="Asia/Shanghai")
    assert plan.last_month_start == pd.Timestamp("2025-06-01", tz="Asia/Shanghai")
    # serve reads the store where quickstart writes it (compose.yaml relies on OUT/store)
    assert (plan.bank_dir, plan.store_dir) == (Path("qs/bank"), Path("qs/store"))
    assert (plan.report_path, plan.scores_path) == (Path("qs/report.html"), Path("qs/scores.csv"))


def test_the_printer_answers_every_step_the_pipeline_tells():
    steps = {
        name
        for name, _ in inspect.getmembers(QuickstartSteps, inspect.isfunction)
        if not name.startswith("_")
    }
    assert len(steps) == 12
    for name in steps:
        told = inspect.signature(getattr(QuickstartSteps, name)).parameters
        printed = inspect.signature(getattr(QuickstartPrinter, name)).parameters
        assert list(printed) == list(told), name

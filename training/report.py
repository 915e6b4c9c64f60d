"""The model report: one self-contained HTML file per registered model, built from its run alone.

Everything here reads what a training run logged (parameters, metrics and artifacts,
above all ``evaluation_frame.parquet``) and the verified bundle: no event store, no
network. Figures are embedded as PNG data URIs and the CSS is inline, so the file
can be mailed to a model-risk reviewer as is. The report is also logged to the
model's run as ``report.html``.

This module assembles the report; each section is built by a function of
:mod:`duanka.training.report_sections_model` (purpose, data, features, method),
:mod:`duanka.training.report_sections_performance` (performance, explanations) or
:mod:`duanka.training.report_sections_oversight` (stability, fairness, comparison, lineage), all
reading one :class:`duanka.training.report_context.ReportContext`; the figures they print are
defined once in :mod:`duanka.training.monitoring`.

Privacy: the evaluation frame holds one row per application with its id; the report
prints aggregates only, never a row-level id.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import mlflow
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from duanka.data.config import SHANGHAI
from duanka.training.bands import ALERT_BANDS
from duanka.training.bundle import load_registered
from duanka.training.monitoring_plan import MONITORING_PLAN
from duanka.training.promote import PROMOTION_RULE
from duanka.training.report_context import REPORT_NAME, ReportContext, read_run
from duanka.training.report_format import local_time
from duanka.training.report_sections_model import (
    data_section,
    features_section,
    method_section,
    purpose_section,
)
from duanka.training.report_sections_oversight import (
    comparison_section,
    fairness_section,
    lineage_section,
    stability_section,
)
from duanka.training.report_sections_performance import explanations_section, performance_section

TEMPLATE = "report.html.j2"
SECTIONS: tuple[tuple[str, str], ...] = (
    ("purpose", "Purpose and intended use"),
    ("data", "Data"),
    ("features", "Features"),
    ("method", "Method"),
    ("performance", "Performance on the out-of-time test months"),
    ("explanations", "Explanations"),
    ("stability", "Stability"),
    ("fairness", "Fairness"),
    ("comparison", "Champion and challenger"),
    ("limitations", "Limitations"),
    ("monitoring", "Monitoring plan"),
    ("lineage", "Lineage"),
)


def monitoring_section() -> dict[str, object]:
    """Section 11: the monitoring plan, the one ``duanka monitor`` computes.

    Returns
    -------
    dict
        ``plan``: :data:`~duanka.training.monitoring_plan.MONITORING_PLAN`, each item's what, how
        often and trigger.
    """
    return {"plan": MONITORING_PLAN}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_report(
    model_uri: str,
    out: Path,
    client: mlflow.MlflowClient,
    *,
    branches: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the model report for a registered model and log it to the model's run.

    Parameters
    ----------
    model_uri : str
        ``models:/duanka@champion``, ``models:/duanka/3``, ...
    out : Path
        The HTML file to write; its folder is created.
    client : mlflow.MlflowClient
        Registry and tracking client of the store that holds the model.
    branches : int, optional
        Branches the bank runs, for alerts per branch per day; estimated from the
        evaluation frame when not given (the report says which).
    progress : bool
        Show a progress bar over the sections.

    Returns
    -------
    Path
        ``out``.
    """
    model = load_registered(model_uri, client)
    out = Path(out)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(
            TextColumn("[bold]report[/] {task.description:<28}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
    ):
        task = bar.add_task("reading the run", total=len(SECTIONS) + 2)
        run = read_run(model.run_id, client, Path(tmp))
        c = ReportContext(model, run, branches)
        bar.advance(task)
        builders: dict[str, Callable[[], dict]] = {
            "purpose": lambda: purpose_section(c),
            "data": lambda: data_section(c),
            "features": lambda: features_section(c),
            "method": lambda: method_section(c),
            "performance": lambda: performance_section(c),
            "explanations": lambda: explanations_section(c),
            "stability": lambda: stability_section(c),
            "fairness": lambda: fairness_section(c),
            "comparison": lambda: comparison_section(client),
            "limitations": dict,  # the template's own text: nothing to compute
            "monitoring": monitoring_section,
            "lineage": lambda: lineage_section(c),
        }
        context: dict[str, object] = {}
        for key, title in SECTIONS:
            bar.update(task, description=title.lower()[:28])
            context[key] = builders[key]()
            bar.advance(task)
        bar.update(task, description="writing")
        html = (
            _environment()
            .get_template(TEMPLATE)
            .render(
                sections=SECTIONS,
                model=model,
                params=run.params,
                built_at=datetime.now(ZoneInfo(SHANGHAI)).strftime("%Y-%m-%d %H:%M Beijing time"),
                trained_as_of=local_time(run.params.get("as_of"), "?") + " Beijing time",
                alert_bands=ALERT_BANDS,
                promotion_rule=PROMOTION_RULE,
                **context,
            )
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        logged = Path(tmp) / "logged" / REPORT_NAME
        logged.parent.mkdir()
        shutil.copyfile(out, logged)
        client.log_artifact(model.run_id, str(logged))
        bar.advance(task)
    return out

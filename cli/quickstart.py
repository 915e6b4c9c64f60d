"""``duanka quickstart``: the demo pipeline (:mod:`duanka.serving.quickstart`), told as it goes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from duanka.cli.data import IngestTable, ingest_bar
from duanka.cli.output import console, err, fail, invoked_as
from duanka.cli.prerequisites import warn_if_demo_key
from duanka.cli.record import say_recorded
from duanka.cli.scoring import show_recorded, show_scores
from duanka.cli.training import show_training
from duanka.data.config import Settings, get_settings
from duanka.data.ingest_job import IngestedFile
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import GeneratedBank
from duanka.serving.quickstart import DemoApproval, DemoPlan, DemoScores
from duanka.training.promote import Decision
from duanka.training.run import TrainConfig, TrainResult


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the demo bank and its event store.")] = Path(
        "data/quickstart"
    ),
    applications: Annotated[int, typer.Option(min=20_000, help="Size of the demo bank.")] = 150_000,
    months: Annotated[int, typer.Option(min=12, help="Months of the demo bank.")] = 18,
) -> None:
    """Generate a demo bank, ingest it (demo key), train, promote, report, score its last month and
    record its decisions."""
    from duanka.data.pseudonym import MissingPseudonymKey
    from duanka.data.reader import UnusableFile
    from duanka.data.store import StoreUnusable
    from duanka.serving.quickstart import run_quickstart
    from duanka.training.bundle import ModelIntegrityError
    from duanka.training.signing import SigningKeyError

    settings = get_settings()
    plan = DemoPlan(out, applications=applications, months=months, seed=settings.seed)
    try:
        demo = run_quickstart(plan, settings, QuickstartPrinter(plan, settings), file_progress=ingest_bar)
    except (
        MissingPseudonymKey,
        UnusableFile,
        StoreUnusable,
        ValueError,
        SigningKeyError,
        ModelIntegrityError,
    ) as exc:
        raise fail(str(exc)) from None
    console.print(
        f"refused by rule (applicant on the joint-punishment list): {demo.refused:,} of "
        f"{len(demo.scores):,} applications; model alerts (high or critical): {demo.alerts:,}"
    )
    me = invoked_as()
    # soft_wrap: a path or a command is never broken over lines, in a narrow terminal or a log
    console.print(
        "[bold green]quickstart done[/]\n"
        f"  demo bank (contract CSV + truth): {plan.bank_dir}\n"
        f"  event store (pseudonymised):     {plan.store_dir}\n"
        f"  MLflow tracking + registry:      {settings.tracking_uri()}  (models:/duanka@champion)\n"
        f"  model report:                    {plan.report_path}\n"
        f"  last month's scores:             {plan.scores_path}\n"
        "serve it (an API key, printed once, then the service):",
        soft_wrap=True,
    )
    console.print(f"{me} keys create --data {plan.store_dir}", soft_wrap=True, markup=False)
    console.print(f"{me} serve --data {plan.store_dir} --demo", soft_wrap=True, markup=False)
    console.print(
        "sign a reviewer in to the case queue (in another terminal while it serves; the queue holds "
        "the demo month's referred cases): a reviewer key, then the one-time link it prints the command for",
        soft_wrap=True,
    )
    console.print(f"{me} keys create --reviewer --data {plan.store_dir}", soft_wrap=True, markup=False)
    console.print(
        "and a model reviewer to the model versions (/models) and the demo month's monitoring (/monitor):",
        soft_wrap=True,
    )
    console.print(f"{me} keys create --model-reviewer --data {plan.store_dir}", soft_wrap=True, markup=False)


class QuickstartPrinter:
    """Each step of the demo on the terminal, in the lines the verbs of those steps print."""

    def __init__(self, plan: DemoPlan, settings: Settings) -> None:
        self.plan = plan
        self.settings = settings
        self.ingest_table = IngestTable(EventStore(plan.store_dir))

    def bank_generated(self, bank: GeneratedBank) -> None:
        console.print(
            f"demo bank: {bank.n_applications:,} applications, {bank.n_labels:,} labels, "
            f"{bank.n_listed:,} watchlist listings -> {self.plan.bank_dir}",
            soft_wrap=True,
        )

    def ingest_started(self, keys: Pseudonymiser) -> None:
        warn_if_demo_key(keys)

    def store_replaced(self, why: str) -> None:
        console.print(f"{why}\nthe demo store is made again from the demo bank")

    def file_ingested(self, ingested: IngestedFile) -> None:
        self.ingest_table.add(ingested)

    def ingest_done(self) -> None:
        self.ingest_table.show()

    def training_started(self, as_of: pd.Timestamp) -> None:
        console.print(f"training as of {as_of.date()} (the end of the demo period)")

    def trained(self, result: TrainResult, config: TrainConfig) -> None:
        show_training(result, config.label_policy, self.settings)

    def approved(self, approval: DemoApproval) -> None:
        review = approval.review
        console.print(
            f"approved v{review.version} on its report (sha256 {review.report_sha256}) as model-reviewer key "
            f"{review.by}, made for the demo and revoked after: tagged in MLflow",
            soft_wrap=True,
            markup=False,
        )
        written = approval.record if approval.not_recorded is None else None
        say_recorded(
            written, approval.not_recorded, "(model_reviewed)", "the version's MLflow tags keep the review"
        )

    def promoted(self, decision: Decision) -> None:
        console.print(
            f"promotion of v{decision.challenger_version}: "
            f"{'promoted' if decision.promoted else 'kept out'} ({decision.reason})"
        )

    def reported(self, report: Path) -> None:
        console.print(f"wrote model report -> {report}", soft_wrap=True)

    def scoring_started(self, start: pd.Timestamp, end: pd.Timestamp) -> None:
        console.print(f"scoring the last month ({start.date()} to {end.date()}) with the champion")

    def scored(self, scores: DemoScores) -> None:
        show_scores(scores.scores, scores.written, scores.model)
        if scores.recorded is not None:
            show_recorded(scores.recorded, scores.record)
        else:
            err.print(
                f"[bold yellow]decisions not recorded[/] in {scores.record}: {scores.not_recorded}",
                soft_wrap=True,
            )

"""The demo pipeline of ``duanka quickstart``: every room once, on a synthetic bank.

Generate a bank, ingest it under the demo pseudonym key (unless a key is configured), train
as of the end of its period, write the challenger's model report, approve it through the path a
model reviewer's approval takes (a model-reviewer key of the demo's own, used once and revoked:
the approval is tagged on the version and chained in the decision record, its note saying that
no person read the report), promote it by the rule that needs that approval, and score its last
month with the champion, recording its
decisions in the store's decision record (as ``duanka score --record`` does), where the service
and its pages read them. It lives in serving, the one room
that may use all the others. It prints nothing: it tells a :class:`QuickstartSteps` what each
step did, and raises what a step raises.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import pandas as pd

from duanka.data.config import SHANGHAI, Settings
from duanka.data.ingest_job import FileProgress, IngestedFile, contract_files, ingest_files
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore, StoreOutdated
from duanka.data.store_lock import StoreHeld
from duanka.data.synthetic import GeneratedBank, generate_bank
from duanka.serving.audit import DecisionLog, RecordTampered
from duanka.serving.batch import PeriodDecisions, write_scores
from duanka.serving.batch_job import Recorded, decide_stored_period, record_decisions
from duanka.serving.chain import MissingChainKey, chain_key
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import LoadedModel, ModelSource
from duanka.serving.record_event import append_store_event
from duanka.serving.review.model_desk import ModelDesk
from duanka.serving.state import ServingPaths
from duanka.training.approval import APPROVED, PROMOTED, REVIEWED, Review, record_review, utc_now
from duanka.training.bands import ALERT_BANDS, BLOCKED
from duanka.training.jobs import promote_challenger, train_challenger
from duanka.training.promote import Decision
from duanka.training.report import build_report
from duanka.training.run import TrainConfig, TrainResult
from duanka.training.signing import signing_key
from duanka.training.tracking import configure

CHAMPION_URI = "models:/duanka@champion"
DEMO_REVIEW_NOTE = (
    "demo bank: approved by duanka quickstart's own model-reviewer key on the report it built; "
    "no person read that report"
)


@dataclass(frozen=True)
class DemoPlan:
    """Where the demo writes and which period its bank covers.

    Attributes
    ----------
    out : pathlib.Path
        The demo's folder: ``bank/``, ``store/``, ``report.html``, ``scores.csv``.
    applications : int
        Size of the bank.
    months : int
        Months of openings, from ``start``.
    seed : int
        Seed of the bank.
    start : datetime.date
        First day of the bank's period.
    """

    out: Path
    applications: int
    months: int
    seed: int
    start: date = date(2024, 1, 1)

    @property
    def bank_dir(self) -> Path:
        return self.out / "bank"

    @property
    def store_dir(self) -> Path:
        return self.out / "store"

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"

    @property
    def scores_path(self) -> Path:
        return self.out / "scores.csv"

    @property
    def as_of(self) -> pd.Timestamp:
        """The end of the bank's period (Asia/Shanghai): the model is trained as of it."""
        return pd.Timestamp(self.start, tz=SHANGHAI) + pd.DateOffset(months=self.months)

    @property
    def last_month_start(self) -> pd.Timestamp:
        """The start of the month the champion scores, which ends at :attr:`as_of`."""
        return self.as_of - pd.DateOffset(months=1)


@dataclass(frozen=True)
class DemoScores:
    """The last month's scores and what they say.

    Attributes
    ----------
    scores : pandas.DataFrame
        The scores file's rows.
    written : pathlib.Path
        Where they were written.
    model : LoadedModel
        The champion that scored them.
    record : pathlib.Path
        The store's decision record.
    recorded : Recorded, optional
        What was appended to ``record``; None when nothing could be (``not_recorded`` says why).
    not_recorded : str, optional
        Why the decisions were not recorded: the service holds the store, no audit key is
        configured beside a configured pseudonym key, or the record was tampered with.
    """

    scores: pd.DataFrame
    written: Path
    model: LoadedModel
    record: Path
    recorded: Recorded | None = None
    not_recorded: str | None = None

    @property
    def refused(self) -> int:
        """Applications refused by rule: the applicant is on the joint-punishment list."""
        return int((self.scores["band"] == BLOCKED).sum())

    @property
    def alerts(self) -> int:
        """Applications the model puts in an alert band."""
        return int(self.scores["band"].isin(ALERT_BANDS).sum())


class QuickstartSteps(Protocol):
    """What :func:`run_quickstart` tells its caller, step by step."""

    def bank_generated(self, bank: GeneratedBank) -> None: ...

    def ingest_started(self, keys: Pseudonymiser) -> None: ...

    def store_replaced(self, why: str) -> None: ...

    def file_ingested(self, ingested: IngestedFile) -> None: ...

    def ingest_done(self) -> None: ...

    def training_started(self, as_of: pd.Timestamp) -> None: ...

    def trained(self, result: TrainResult, config: TrainConfig) -> None: ...

    def approved(self, approval: DemoApproval) -> None: ...

    def promoted(self, decision: Decision) -> None: ...

    def reported(self, report: Path) -> None: ...

    def scoring_started(self, start: pd.Timestamp, end: pd.Timestamp) -> None: ...

    def scored(self, scores: DemoScores) -> None: ...


@dataclass(frozen=True)
class DemoApproval:
    """The demo's approval of its challenger: the review, and where it was recorded (or why not)."""

    review: Review
    report: Path
    record: Path
    not_recorded: str | None = None


def run_quickstart(
    plan: DemoPlan, settings: Settings, steps: QuickstartSteps, *, file_progress: FileProgress | None = None
) -> DemoScores:
    """Run the demo of ``plan``; the champion's scores of the bank's last month.

    Raises
    ------
    data.pseudonym.MissingPseudonymKey, ValueError
        An unusable configured pseudonym key; ValueError also for training the store cannot answer.
    training.signing.SigningKeyError
        An unreadable model signing key.
    training.bundle.ModelIntegrityError
        A registered model that fails verification.
    """
    bank = generate_bank(
        plan.bank_dir,
        months=plan.months,
        applications=plan.applications,
        seed=plan.seed,
        start=plan.start,
        progress=True,
    )
    steps.bank_generated(bank)

    keys = Pseudonymiser.from_settings(settings, demo=True)
    steps.ingest_started(keys)
    store = EventStore(plan.store_dir)
    try:
        store.check_layout()
    except StoreOutdated as exc:
        # The demo store holds nothing but the generated bank, which is ingested again below.
        shutil.rmtree(plan.store_dir)
        steps.store_replaced(str(exc))
    files = contract_files(bank.applications, bank.labels, bank.watchlist)
    for ingested in ingest_files(files, store, keys, progress=file_progress):
        steps.file_ingested(ingested)
    steps.ingest_done()

    steps.training_started(plan.as_of)
    config = TrainConfig(as_of=plan.as_of.tz_convert("UTC"), truth=bank.truth)
    trained = train_challenger(store, config, settings)
    steps.trained(trained, config)
    version = trained.model_version
    # the report of the version itself, logged to its run: what an approval names by hash
    steps.reported(build_report(f"models:/duanka/{version}", plan.report_path, configure(settings)))
    approval = approve_demo_version(store, settings, keys, version, plan.report_path)
    steps.approved(approval)
    promoted = promote_challenger(store, settings)
    if promoted.promoted and approval.not_recorded is None:  # chained as `duanka promote` chains it
        chain_event(store, settings, keys, PROMOTED, promoted.record_detail(), key_id=None)
    steps.promoted(promoted)

    start, end = plan.last_month_start, plan.as_of
    steps.scoring_started(start, end)
    champion = ModelSource(CHAMPION_URI, configure(settings), signing_key=signing_key(settings)).load()
    decided = decide_stored_period(store, start.tz_convert("UTC"), end.tz_convert("UTC"), champion)
    written = write_scores(decided.scores, plan.scores_path)
    record = ServingPaths.for_data(store.root, settings).decisions
    try:
        recorded = _record(store, record, decided, champion, chain_key(settings, keys))
    except (StoreHeld, MissingChainKey, RecordTampered) as exc:
        # the scores are written: the demo goes on, and says why its record stayed as it was
        demo = DemoScores(decided.scores, written, champion, record, not_recorded=str(exc))
    else:
        demo = DemoScores(decided.scores, written, champion, record, recorded)
    steps.scored(demo)
    return demo


def approve_demo_version(
    store: EventStore, settings: Settings, keys: Pseudonymiser, version: str, report: Path
) -> DemoApproval:
    """Approve ``version`` as ``duanka models approve`` does, with a model-reviewer key made for it
    and revoked after (its secret never leaves this function)."""
    client = configure(settings)
    desk = ModelDesk(client)
    sha = desk.checked_review(version, APPROVED, desk.current_report(version))
    paths = ServingPaths.for_data(store.root, settings)
    keyfile = KeyFile(paths.keys)
    reviewer, _ = keyfile.create(model_reviewer=True)
    given = Review(version, APPROVED, reviewer.key_id, utc_now(), DEMO_REVIEW_NOTE, sha, "quickstart")
    # the record first, as the page does; MLflow's tags keep the review if it cannot be recorded
    not_recorded = chain_event(store, settings, keys, REVIEWED, given.detail(), key_id=given.by)
    record_review(client, given)
    keyfile.revoke(reviewer.key_id)
    return DemoApproval(given, report, paths.decisions, not_recorded)


def chain_event(
    store: EventStore,
    settings: Settings,
    keys: Pseudonymiser,
    kind: str,
    detail: dict[str, str | None],
    *,
    key_id: str | None,
) -> str | None:
    """Append one event to the demo store's decision record; why not, when it could not be."""
    request_id = f"quickstart-{uuid.uuid4().hex}"
    _, why = append_store_event(
        store, settings, keys, "quickstart", kind, detail, key_id=key_id, request_id=request_id
    )
    return why


def _record(
    store: EventStore, record: Path, decided: PeriodDecisions, model: LoadedModel, key: bytes
) -> Recorded:
    """Append ``decided`` to the decision record at ``record``, holding the store meanwhile (a
    service on it would extend the same chain).

    Raises
    ------
    StoreHeld
        A service holds the store.
    RecordTampered
        The record was tampered with (the service would refuse it too).
    """
    with store.hold("quickstart"), DecisionLog(record, chain_key=key) as log:
        return record_decisions(log, decided, model)

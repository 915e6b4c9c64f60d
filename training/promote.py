"""Moving ``champion``: the challenger replaces it only when better, like with like, on rows
neither model was fitted on.

The rule is :data:`PROMOTION_RULE`, in plain words because the model report prints it as
written (docs/model.md quotes it). Each run keeps its *evidence* model (:mod:`duanka.training.fit`)
for it. Before the rule, review: a challenger is promoted only with a model reviewer's approval of
its current report (:func:`duanka.training.approval.approval_problem`). ``--force`` overrides both,
and who forced it is tagged on the version; every decision is logged to MLflow (experiment
``duanka-promotions``) and tagged on the version.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.features.registry import FEATURE_SET_VERSION
from duanka.features.training_set import build_training_set
from duanka.training.approval import (
    Review,
    approval_problem,
    operator,
    record_forced,
    review_of,
    short,
    utc_now,
)
from duanka.training.bundle import MODEL_NAME, RegisteredModel, ScoringBundle, load_evidence, load_registered
from duanka.training.metrics import point_metrics, recall_key
from duanka.training.tracking import experiment_id, metric_key

RECALL_TOLERANCE = 0.02
PROMOTION_RULE = (
    "A shipped model is a refit on everything labelled up to its as-of date, so no labelled rows "
    "are left that the challenger's shipped model has not seen. Each run therefore keeps its "
    "evidence model: the same configuration fitted by the same protocol on the split's training "
    "months only. The rule compares the two runs' evidence models on the challenger's out-of-time "
    "test months, less any row the champion's evidence model was fitted, stopped or calibrated on "
    "(applied before the champion's own test months began): the challenger's PR-AUC there must "
    "exceed the champion's, and its recall at a 1% alert rate may not fall by more than "
    f"{RECALL_TOLERANCE} (RECALL_TOLERANCE). --force overrides."
)
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided, and on what.

    Attributes
    ----------
    promoted : bool
    reason : str
    challenger_version, champion_version : str, str or None
        The versions judged (the champion before the decision).
    metrics : dict
        Both evidence models' figures, when the rule compared them.
    approval : Review or None
        The approval that let the challenger through (None when forced or not promoted).
    forced_by : str or None
        Who forced it (``--force``), when it was.
    """

    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None
    metrics: dict[str, float]
    approval: Review | None = None
    forced_by: str | None = None

    def record_detail(self) -> dict[str, str | None]:
        """The decision record's ``model_promoted`` detail: which version replaced which, on whose
        approval of which report, or who forced it."""
        approval = self.approval
        return {
            "version": self.challenger_version,
            "previous": self.champion_version,
            "forced_by": self.forced_by,
            "approved_by": approval.by if approval else None,
            "approved_at": approval.at if approval else None,
            "report_sha256": approval.report_sha256 if approval else None,
            "reason": self.reason,
        }


def _params(model: RegisteredModel) -> dict[str, str]:
    return mlflow.get_run(model.run_id).data.params


def _evidence(model: RegisteredModel, client: mlflow.MlflowClient) -> ScoringBundle | None:
    tags = client.get_model_version(MODEL_NAME, model.version).tags
    return load_evidence(model.run_id, tags.get("evidence_sha256"))


def comparison_rows(challenger_params: dict[str, str], champion_params: dict[str, str], frame: pd.DataFrame):
    """The rows of ``frame`` in the challenger's test months that the champion's evidence never saw."""
    start = max(
        pd.Timestamp(challenger_params["split_test_start"]), pd.Timestamp(champion_params["split_test_start"])
    )
    end = pd.Timestamp(challenger_params["split_test_end"])
    return frame.loc[(frame["applied_at"] >= start) & (frame["applied_at"] < end)]


def _test_rows(challenger: RegisteredModel, store: EventStore, settings: Settings) -> pd.DataFrame:
    params = _params(challenger)
    as_of = pd.Timestamp(params["as_of"])
    ts = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=as_of,
        outcome_window_days=int(params["outcome_window_days"]),
    )
    start, end = pd.Timestamp(params["split_test_start"]), pd.Timestamp(params["split_test_end"])
    frame = ts.mature()
    return frame.loc[(frame["applied_at"] >= start) & (frame["applied_at"] < end)]


def _decide(challenger: dict[str, float], champion: dict[str, float]) -> tuple[bool, str]:
    key = recall_key(0.01)
    if challenger["pr_auc"] <= champion["pr_auc"]:
        return (
            False,
            f"PR-AUC {challenger['pr_auc']:.4f} does not beat the champion's {champion['pr_auc']:.4f}",
        )
    if challenger[key] < champion[key] - RECALL_TOLERANCE:
        return False, f"{key} falls from {champion[key]:.3f} to {challenger[key]:.3f}"
    return True, (
        f"PR-AUC {champion['pr_auc']:.4f} -> {challenger['pr_auc']:.4f}, "
        f"{key} {champion[key]:.3f} -> {challenger[key]:.3f}"
    )


def promote(
    store: EventStore, settings: Settings, *, force: bool = False, forced_by: str | None = None
) -> Decision:
    """Move ``@champion`` to the challenger when a reviewer approved its report and it is better on
    the same test months; or, with ``force``, whatever the review and the rule say.

    Parameters
    ----------
    store : EventStore
        Where the test months are re-scored from.
    settings : Settings
    force : bool
        Promote without an approval and whatever the comparison says.
    forced_by : str, optional
        Who forces it, tagged on the version; the operating system's user name by default.
    """
    client = mlflow.MlflowClient()
    challenger = load_registered(f"models:/{MODEL_NAME}@{CHALLENGER}", client)
    try:
        client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None  # the normal first case
    else:
        champion = load_registered(f"models:/{MODEL_NAME}@{CHAMPION}", client)
    metrics: dict[str, float] = {}
    by = (forced_by or operator()) if force else None
    # the review is asked first: a version no reviewer approved is not compared at all
    problem = approval_problem(client, challenger.version)
    if champion is not None and champion.version == challenger.version:
        promoted, reason = False, f"version {challenger.version} is already champion"
    elif force:
        promoted, reason = True, f"forced by {by}" + (f"; {problem}" if problem else "")
    elif problem is not None:
        promoted, reason = False, problem
    elif champion is None:
        promoted, reason = True, "no champion yet: the first challenger becomes champion"
    elif champion.bundle.feature_set_version != FEATURE_SET_VERSION:
        promoted, reason = (
            False,
            (
                "the champion was trained on another feature set and cannot be scored on the same rows "
                "by this code: compare by hand and use --force"
            ),
        )
    elif (champion_evidence := _evidence(champion, client)) is None or (
        challenger_evidence := _evidence(challenger, client)
    ) is None:
        promoted, reason = (
            False,
            "a model kept no evidence model (it predates refits), so nothing compares like with like: "
            "compare by hand and use --force",
        )
    else:
        evidence = {CHALLENGER: challenger_evidence, CHAMPION: champion_evidence}
        rows = comparison_rows(
            _params(challenger), _params(champion), _test_rows(challenger, store, settings)
        )
        y = rows["label"].to_numpy()
        if len(rows) == 0 or y.min() == y.max():
            promoted, reason = (
                False,
                "no test rows with both classes that neither evidence model was fitted on "
                "(the champion's test months start after the challenger's): use --force",
            )
        else:
            results = {}
            for role, bundle in evidence.items():
                X = rows.loc[:, bundle.feature_names].to_numpy(dtype=float)
                results[role] = point_metrics(y, bundle.score(X))
            promoted, reason = _decide(results[CHALLENGER], results[CHAMPION])
            reason += f" (evidence models on {len(rows):,} test rows neither was fitted on)"
            metrics = {f"{role}_{k}": v for role, m in results.items() for k, v in m.items()}
    approval = review_of(client, challenger.version) if promoted and not force else None
    if approval is not None:
        reason += (
            f"; approved by key {approval.by} at {approval.at} on report {short(approval.report_sha256)}"
        )
    if promoted:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, challenger.version)
        if by is not None:
            record_forced(client, challenger.version, by, utc_now())
    decision = Decision(
        promoted,
        reason,
        challenger.version,
        champion.version if champion else None,
        metrics,
        approval,
        by if promoted else None,
    )
    _log(decision, force, settings)
    client.set_model_version_tag(
        MODEL_NAME, challenger.version, "promotion", ("promoted: " if promoted else "kept out: ") + reason
    )
    return decision


def _log(decision: Decision, force: bool, settings: Settings) -> None:
    experiment = experiment_id("duanka-promotions", settings)
    with mlflow.start_run(experiment_id=experiment, run_name=f"promote v{decision.challenger_version}"):
        mlflow.log_params(
            {
                "challenger_version": decision.challenger_version,
                "champion_version": decision.champion_version or "none",
                "force": force,
                "promoted": decision.promoted,
                "forced_by": decision.forced_by or "",
                "approved_by": decision.approval.by if decision.approval else "",
                "report_sha256": (decision.approval.report_sha256 or "") if decision.approval else "",
            }
        )
        mlflow.set_tag("reason", decision.reason)
        mlflow.log_metrics({metric_key(k): v for k, v in decision.metrics.items()})

"""Review before promotion: a model reviewer's approval or rejection of a registered version, kept
as tags on the version, and what ``duanka promote`` asks of it.

A review names the report it was given on, by the SHA-256 of the ``report.html`` that the
version's run holds (:func:`duanka.training.report.build_report` logs it there). A report built
again later is another report: the approval does not cover it, and the version needs reviewing
again before it is promoted (:func:`approval_problem`). The latest review of a version is its
tags; every review is also a chained ``model_reviewed`` event in the decision record, when it
was written there (the page always; the command line while no service holds the store).

``--force`` promotes without an approval and is itself kept: who forced it and when
(:func:`record_forced`).
"""

from __future__ import annotations

import getpass
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow

from duanka.training.bundle import MODEL_NAME
from duanka.training.report_context import REPORT_NAME

APPROVED, REJECTED = "approved", "rejected"
# the verb a reviewer uses (page button, command) -> what is kept
DECISIONS = {"approve": APPROVED, "reject": REJECTED}
REVIEWED = "model_reviewed"  # the decision record's event kind
PROMOTED = "model_promoted"
_TAG = "duanka.review."
FORCED_BY_TAG, FORCED_AT_TAG = "duanka.forced_by", "duanka.forced_at"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Review:
    """One reviewer's decision on one version.

    Attributes
    ----------
    version : str
        The registered version of ``duanka``.
    decision : str
        :data:`APPROVED` or :data:`REJECTED`.
    by : str
        The model reviewer's key id.
    at : str
        ISO 8601 UTC.
    note : str
        Why, in the reviewer's words.
    report_sha256 : str or None
        The report the review was given on (None: a rejection of a version without a report).
    via : str
        ``page`` (``/models``) or ``cli`` (``duanka models approve``).
    """

    version: str
    decision: str
    by: str
    at: str
    note: str
    report_sha256: str | None
    via: str

    @property
    def approved(self) -> bool:
        return self.decision == APPROVED

    def detail(self) -> dict[str, str | None]:
        """The decision record's ``model_reviewed`` detail (the key id is the event's own column)."""
        return {
            "version": self.version,
            "decision": self.decision,
            "note": self.note,
            "report_sha256": self.report_sha256,
            "via": self.via,
        }

    def tags(self) -> dict[str, str]:
        fields = {"by": self.by, "at": self.at, "note": self.note, "via": self.via}
        fields["report_sha256"] = self.report_sha256 or ""
        return {_TAG + k: v for k, v in fields.items()}

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> Review | None:
        """The review a version's tags hold, or None when it was never reviewed."""
        decision = tags.get(_TAG + "decision")
        if decision not in (APPROVED, REJECTED):
            return None
        return cls(
            version=version,
            decision=decision,
            by=tags.get(_TAG + "by", "?"),
            at=tags.get(_TAG + "at", "?"),
            note=tags.get(_TAG + "note", ""),
            report_sha256=tags.get(_TAG + "report_sha256") or None,
            via=tags.get(_TAG + "via", "?"),
        )


def run_of(client: mlflow.MlflowClient, version: str) -> str:
    """The training run of a registered version.

    Raises
    ------
    mlflow.exceptions.MlflowException
        No such version.
    """
    return client.get_model_version(MODEL_NAME, version).run_id


def report_sha256(client: mlflow.MlflowClient, run_id: str) -> str | None:
    """The SHA-256 of the report a run holds now, or None when no report was built for it."""
    if REPORT_NAME not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, REPORT_NAME, tmp))
        return hashlib.sha256(path.read_bytes()).hexdigest()


def report_html(client: mlflow.MlflowClient, run_id: str) -> bytes | None:
    """The report a run holds now, as stored (its hash is :func:`report_sha256`'s), or None."""
    if REPORT_NAME not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, REPORT_NAME, tmp)).read_bytes()


def review_of(client: mlflow.MlflowClient, version: str) -> Review | None:
    """The latest review of ``version``, as its tags hold it."""
    return Review.from_tags(version, client.get_model_version(MODEL_NAME, version).tags)


def record_review(client: mlflow.MlflowClient, review: Review) -> None:
    """Tag ``review`` on its version, replacing an earlier one.

    The decision tag goes first out and last in: a reader in between finds no review rather
    than the old decision beside the new report hash.
    """
    client.delete_model_version_tag(MODEL_NAME, review.version, _TAG + "decision")
    for key, value in review.tags().items():
        client.set_model_version_tag(MODEL_NAME, review.version, key, value)
    client.set_model_version_tag(MODEL_NAME, review.version, _TAG + "decision", review.decision)


def approval_problem(client: mlflow.MlflowClient, version: str) -> str | None:
    """Why ``version`` may not be promoted without ``--force``; None when an approval covers its report."""
    review = review_of(client, version)
    if review is None:
        return (
            f"version {version} has no approval: a model reviewer approves it on /models or with "
            f"`duanka models approve {version} --note ...`"
        )
    if not review.approved:
        return f"version {version} was rejected by key {review.by} at {review.at}: {review.note}"
    current = report_sha256(client, run_of(client, version))
    if current is None:
        return f"version {version} was approved, but its run holds no report now: build it and review again"
    if current != review.report_sha256:
        return (
            f"version {version} was approved by key {review.by} on report {short(review.report_sha256)}, "
            f"but its report is now {short(current)} (built again since): review it again"
        )
    return None


def short(sha256: str | None) -> str:
    """A hash as people compare it by eye: its first 12 hex digits."""
    return sha256[:12] if sha256 else "none"


def operator() -> str:
    """Who runs this command, as the operating system names them (``--force`` without ``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "unknown"


def record_forced(client: mlflow.MlflowClient, version: str, by: str, at: str) -> None:
    """Tag who forced ``version`` to champion, and when."""
    client.set_model_version_tag(MODEL_NAME, version, FORCED_BY_TAG, by)
    client.set_model_version_tag(MODEL_NAME, version, FORCED_AT_TAG, at)

"""One row of the monitoring plan, as computed: what, over which period, the figure, the trigger and
its status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from markupsafe import Markup


class Status(IntEnum):
    """A trigger's verdict; its value is ``duanka monitor``'s exit status (the worst row's)."""

    OK = 0
    WATCH = 1
    ACT = 2

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class PlanRow:
    """A row of the report's monitoring plan (``training/templates/report.html.j2``, section 11).

    Attributes
    ----------
    key : str
        Stable identifier (``bands_branch``), for the page's anchors and for metrics.
    what : str
        The row as the plan names it.
    period : str
        How often, and the period this run judged.
    value : str
        The figure, in a few words.
    trigger : str
        When it says watch or act.
    status : Status
    finding : str
        Why this status, in one sentence.
    computed : bool
        False when the figure could not be computed (nothing recorded, no reference, no month
        whose outcome window has closed): the row says watch so that the gap is seen, but it
        sets no exit status, or every run would say watch for what no run can change.
    figure : str, optional
        A ``data:image/png`` URI.
    details : Markup, optional
        An escaped HTML table of the figures behind the row.
    gauges : mapping of str to float
        The row's figures as numbers for ``/metrics`` (``band_share:critical``, ``psi:score``):
        only what a dashboard plots overall, never a branch's.
    """

    key: str
    what: str
    period: str
    value: str
    trigger: str
    status: Status
    finding: str
    computed: bool = True
    figure: str | None = None
    details: Markup | None = None
    gauges: Mapping[str, float] = field(default_factory=dict)


def not_computed(key: str, what: str, period: str, trigger: str, why: str) -> PlanRow:
    """A row whose figure cannot be computed: watch, with why, setting no exit status."""
    return PlanRow(key, what, period, "not computed", trigger, Status.WATCH, why, computed=False)

"""The review desk of one running service: its sessions, its cases, and what a case page draws."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from duanka.features.online_rows import micros
from duanka.serving.keys import ApiKey
from duanka.serving.review.cases import Case, CaseBook, read_only
from duanka.serving.review.graph import render_svg
from duanka.serving.review.ring import linked_group
from duanka.serving.review.sessions import ReviewSessions

GRAPH_APPLICATIONS = 200


class ReviewDesk:
    """What ``/review`` reads and writes besides the decision record's appends.

    Parameters
    ----------
    root : Path
        The service's folder (``serving/``): ``review.db`` is kept there.
    decisions, online : Path
        The decision record and the online state, both read through read-only connections.
    active_key : callable
        ``key_id -> ApiKey | None`` (:meth:`duanka.serving.keys.KeyFile.active_key`).
    clock : callable, optional
        The service's clock.
    """

    def __init__(
        self,
        root: Path,
        decisions: Path,
        online: Path,
        active_key: Callable[[str], ApiKey | None],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sessions = ReviewSessions(Path(root) / "review.db", active_key, clock)
        self.cases = CaseBook(decisions, online)
        self.online = Path(online)

    def drawing(self, case: Case, branches: tuple[str, ...] | None) -> dict[str, object]:
        """Everything the case page shows besides the case: its answer, history, ring and graph."""
        response = self.cases.response(case.application_id) or {}
        started = time.perf_counter()
        known_at = micros(datetime.fromisoformat(case.applied_at or case.decided_at))
        with read_only(self.online) as con:
            group = linked_group(
                con, case.application_id, known_at_us=known_at, max_applications=GRAPH_APPLICATIONS
            )
        ids = [a.application_id for a in group.applications]
        bands, statuses = self.cases.bands_and_statuses(ids)
        visible = {c.application_id for c in self.cases.visible(branches)}
        svg = render_svg(
            group,
            bands=bands,
            dispositions=statuses,
            href=lambda a: f"/review/cases/{quote(a, safe='')}" if a in visible else None,
        )
        drawn_ms = (time.perf_counter() - started) * 1000
        return {
            "model_name": (response.get("model") or {}).get("name", "duanka"),
            "model_band": response.get("model_band"),
            "reasons": response.get("reasons", []),
            "history": self.cases.history(case.application_id),
            "ring": self.cases.group_of(case, branches),
            "svg": svg,
            "graph_note": f"{len(ids)} application{'s' if len(ids) != 1 else ''} within the link window, "
            f"drawn in {drawn_ms:.0f} ms. Dashed: arrived after the decision.",
        }

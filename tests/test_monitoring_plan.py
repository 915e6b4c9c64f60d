"""The monitoring plan is one list (:data:`duanka.training.monitoring_plan.MONITORING_PLAN`): the model
report prints it, ``duanka monitor`` computes it, and its page shows it, item for item, in one order,
each with the same name and the same trigger.

The monitoring is :mod:`tests.monitor_records`'s stable bank, as :mod:`tests.test_monitor` monitors it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from html.parser import HTMLParser
from pathlib import Path

import pytest

from duanka.serving.monitor.engine import Monitoring
from duanka.serving.monitor.render import render_html
from duanka.training import report
from duanka.training.monitoring_plan import MONITORING_PLAN, PlanItem, plan_item
from tests import monitor_records as records

KEYS = (
    "bands_overall",
    "bands_branch",
    "score_psi",
    "feature_csi",
    "missing",
    "reason_mix",
    "fpr_ratio",
    "origin_reliance",
    "performance",
    "cases",
    "overrides",
)
STATUS_WORDS = {"ok", "watch", "act"}


class Tables(HTMLParser):
    """Every ``<table>`` of a page: its classes, and each row's cells (their text and their chips).

    A cell is ``{"text": ..., "chips": [(classes, text), ...]}``, the chips being its
    ``<span class="chip ...">``; text is whitespace-collapsed and entity-decoded.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._table: dict | None = None
        self._cell: dict | None = None
        self._chip: list | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table":
            self._table = {"classes": classes, "rows": []}
            self.tables.append(self._table)
        elif tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"tag": tag, "text": "", "chips": []}
            self._table["rows"][-1].append(self._cell)
        elif tag == "span" and self._cell is not None and "chip" in classes:
            self._chip = [classes, ""]
            self._cell["chips"].append(self._chip)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = " ".join(self._cell["text"].split())
            self._cell = None
        elif tag == "span" and self._chip is not None:
            self._chip[1] = self._chip[1].strip()
            self._chip = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data
        if self._chip is not None:
            self._chip[1] += data


def tables(html: str) -> list[dict]:
    parser = Tables()
    parser.feed(html)
    parser.close()
    return parser.tables


def columns(table: dict) -> list[dict[str, dict]]:
    """The table's rows below its header row, each a mapping of header text to cell."""
    header, *rows = table["rows"]
    assert all(cell["tag"] == "th" for cell in header)
    names = [cell["text"] for cell in header]
    assert all(len(row) == len(names) for row in rows), names
    return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Monitoring:
    """The stable bank monitored as of its last day, (:func:`tests.monitor_records.monitored`)."""
    folder: Path = tmp_path_factory.mktemp("plan")
    return records.monitored(records.build(folder / "decisions.db"), folder)


def report_section() -> str:
    """Section 11 of the model report, rendered alone from the context the report builds it with."""
    template = report._environment().get_template(report.TEMPLATE)
    context = template.new_context({"sections": report.SECTIONS, "monitoring": report.monitoring_section()})
    return "".join(template.blocks["monitoring"](context))


def test_the_plan_holds_eleven_items_each_named_once_with_a_period_and_a_trigger():
    assert tuple(item.key for item in MONITORING_PLAN) == KEYS
    assert len({item.what for item in MONITORING_PLAN}) == len(MONITORING_PLAN)
    for item in MONITORING_PLAN:
        assert isinstance(item, PlanItem)
        assert item.what and item.how_often and item.trigger, item
        assert plan_item(item.key) is item
    with pytest.raises(FrozenInstanceError):
        MONITORING_PLAN[0].trigger = "never"  # type: ignore[misc]
    with pytest.raises(KeyError, match="no item 'psi'"):
        plan_item("psi")


def test_the_plan_and_the_report_are_declared_without_the_serving_side():
    code = (
        "import sys, duanka.training.monitoring_plan, duanka.training.report; "
        "print(sorted(m for m in sys.modules if m.startswith('duanka.serving')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_triggers_name_the_thresholds_the_monitoring_applies():
    assert plan_item("score_psi").trigger == "> 0.10 watch, > 0.25 act, on the latest week and month"
    assert plan_item("feature_csi").trigger.startswith("a feature's CSI > 0.10 watch, > 0.25 act")
    assert plan_item("missing").trigger.startswith("a feature's missing rate moves by 10 points: act; by 5")
    assert plan_item("fpr_ratio").trigger.startswith("a group's FPR ratio > 1.25 (at least 100 legitimate")
    assert plan_item("bands_overall").trigger.startswith("a share outside 0.5× to 2× its budget")


def test_the_monitoring_computes_the_plan_item_for_item_in_its_order(monitoring: Monitoring):
    assert [row.key for row in monitoring.rows] == [item.key for item in MONITORING_PLAN]
    for row, item in zip(monitoring.rows, MONITORING_PLAN, strict=True):
        assert row.what == item.what, row.key
        assert row.trigger == item.trigger, row.key
        # the period says how often, then what this run judged
        assert row.period.startswith(item.how_often), (row.key, row.period)


def test_the_reports_section_11_prints_the_plan_item_for_item(monitoring: Monitoring):
    assert report.SECTIONS[10] == ("monitoring", "Monitoring plan")
    html = report_section()
    assert '<section id="monitoring">' in html
    (table,) = tables(html)
    rows = columns(table)
    assert [(r["what"]["text"], r["how often"]["text"], r["trigger"]["text"]) for r in rows] == [
        (item.what, item.how_often, item.trigger) for item in MONITORING_PLAN
    ]
    # the same names and triggers as the monitoring's own rows, not just the same list twice
    assert [r["what"]["text"] for r in rows] == [row.what for row in monitoring.rows]
    assert [r["trigger"]["text"] for r in rows] == [row.trigger for row in monitoring.rows]
    assert "Retraining: at least every quarter" in html


def test_the_monitoring_page_shows_every_plan_item_with_its_status(monitoring: Monitoring):
    (plan,) = [t for t in tables(render_html(monitoring)) if "plan" in t["classes"]]
    rows = columns(plan)
    assert [r["what"]["text"] for r in rows] == [item.what for item in MONITORING_PLAN]
    assert [r["trigger"]["text"] for r in rows] == [item.trigger for item in MONITORING_PLAN]
    for cells, row in zip(rows, monitoring.rows, strict=True):
        (chip,) = cells["status"]["chips"]
        classes, word = chip
        assert word in STATUS_WORDS and word == row.status.word, (row.key, chip)
        # a row not computed wears the dashed "gap" chip, and still says watch
        assert (word if row.computed else "gap") in classes, (row.key, chip)


def test_the_table_in_docs_serving_md_is_the_plan_item_for_item():
    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    section = text[text.index("## Monitoring: `/monitor` and `duanka monitor`") :]
    table = section[section.index("| row | how often | trigger |") :].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]
    assert rows == [[item.what, item.how_often, item.trigger] for item in MONITORING_PLAN]

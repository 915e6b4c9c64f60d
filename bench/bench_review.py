"""What the case queue costs on the server, and what its pages look like.

    .venv/bin/python bench/bench_review.py [--open-cases 10000] [--ring 200] [--work /tmp/bench-review]
    .venv/bin/python bench/bench_review.py --screenshots docs/images --demo data/quickstart/store

Timings (median of repeats) on a scratch decision record holding ``--open-cases`` referred,
undisposed decisions (each answer with three reasons, as the service stores them) among
unreferred ones (``--decisions-per-case`` decisions in all for each referred one), and an online
state where the open cases form rings sharing an escort or an address building, plus one ring of
``--ring`` applications:

- the queue page (``/review``, first page of 50 groups) as the route builds it: the cases read
  and grouped (cold: a new case book; warm: the record unchanged since the last page) and the HTML
  rendered;
- the case page's graph for the big ring: the linked group read from the online state, laid out
  (networkx) and drawn as SVG.

``--screenshots`` serves the demo store (``make demo`` first) with ``duanka serve``, signs a
reviewer in through a one-time link in Debian's Chromium (scripts/install-browser), and saves the
queue and the highest-scored case as PNG files. README.md and docs/serving.md record the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo_browser import chromium, median_ms, served_demo

from duanka.features.online import OnlineFeatureStore
from duanka.features.online_rows import micros
from duanka.serving.audit import DecisionLog, DecisionRow, iso_utc
from duanka.serving.review.cases import CaseBook, QueueFilter, read_only
from duanka.serving.review.graph import render_svg
from duanka.serving.review.pages import render_queue
from duanka.serving.review.ring import linked_group

START = datetime(2026, 1, 1, tzinfo=UTC)
REASONS = [
    {
        "code": f"R{n}",
        "family": "escort",
        "feature": f"feature_{n}",
        "value": n * 1.5,
        "contribution": 0.4 / (n + 1),
        "text_zh": f"陪同人近30天带来{n + 3}名申请人",
        "text_en": f"the escort brought {n + 3} applicants in the last 30 days",
    }
    for n in range(3)
]


def build(work: Path, open_cases: int, ring: int, every: int) -> tuple[Path, Path, str]:
    """A scratch decision record and online state; the id of the big ring's first case."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    decisions, online = work / "decisions.db", work / "online.db"
    OnlineFeatureStore(online).close()
    apps, rows, answers = [], [], {}
    ring_sizes = [2 + n % 11 for n in range(open_cases)]
    n_case = 0
    for n in range(open_cases * every):
        referred = n % every == 0 and n_case < open_cases
        at = START + timedelta(minutes=15 * n / every)  # as many cases a day whatever the record size
        application_id = f"APP{n:07d}"
        if referred:
            big = n_case < ring
            group = "big" if big else f"r{n_case // ring_sizes[n_case]}"
            escort, address = (f"esc-{group}", None) if n_case % 2 else (None, f"adr-{group}")
            if big:
                escort, address = "esc-big", f"adr-big-{n_case % 7}"
            n_case += 1
        else:
            escort, address = None, f"adr-{n}"
        branch = f"B{n % 40:02d}"
        apps.append((application_id, micros(at), f"appl-{n}", branch, escort, address))
        band = ("critical" if n % 3 == 0 else "high") if referred else "low"
        rows.append(
            DecisionRow(
                request_id=f"r{n}",
                application_id=application_id,
                key_id="bench",
                decided_at=iso_utc(at),
                model_name="duanka",
                model_version="1",
                booster_sha256="b" * 64,
                score=0.9 if referred else 0.01,
                band=band,
                reason_codes="R0,R1,R2",
                latency_ms=1.0,
                replayed=False,
                branch_id=branch,
                applied_at=iso_utc(at),
            )
        )
        if referred:
            answers[application_id] = ("d" * 64, {"score": 0.9, "band": band, "reasons": REASONS}, None)
    with sqlite3.connect(online) as con:
        con.executemany(
            "INSERT INTO apps (application_id, ts, applicant_key, branch_id, escort_key, address_key, "
            "photo_tampered, out_of_province, corporate, young_company, corporate_without_onsite, "
            "full_bundle, new_phone) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0)",
            apps,
        )
    with DecisionLog(decisions, chain_key=b"bench-review-chain-key-not-a-secret-00") as log:
        for at in range(0, len(rows), 20_000):
            chunk = rows[at : at + 20_000]
            log.record(chunk, {a: answers[a] for a in (r.application_id for r in chunk) if a in answers})
    return decisions, online, "APP0000000"


def screenshots(demo: Path, out: Path, port: int, repeats: int) -> None:
    """Serve the demo store, sign a reviewer in through a link, save the queue and a case as PNG."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    with served_demo(demo, port, "--reviewer") as served, chromium() as driver:
        driver.get(served.link)
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/review"))
        out.mkdir(parents=True, exist_ok=True)
        cookie = {"duanka_review": driver.get_cookie("duanka_review")["value"]}
        queue_ms = median_ms(lambda: httpx.get(f"{served.url}/review", cookies=cookie, timeout=30), repeats)
        rows = len(driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr"))
        driver.set_window_size(1400, 1600)
        driver.save_screenshot(str(out / "review-queue.png"))
        # the lead of the largest ring on the page: the case whose graph shows most
        leads = driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr.lead")
        sizes = [int(m.group(1)) if (m := re.search(r"ring of (\d+)", r.text)) else 1 for r in leads]
        lead = leads[sizes.index(max(sizes))]
        first = lead.find_element(By.TAG_NAME, "a").get_attribute("href")
        case_ms = median_ms(lambda: httpx.get(first, cookies=cookie, timeout=30), repeats)
        driver.get(first)
        driver.set_window_size(1400, 1800)
        driver.save_screenshot(str(out / "review-case.png"))
        print(
            f"demo queue: {rows} rows on its first page; "
            f"GET /review {queue_ms:.1f} ms, GET a case {case_ms:.1f} ms"
        )
        print(f"screenshots -> {out / 'review-queue.png'}, {out / 'review-case.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open-cases", type=int, default=10_000)
    parser.add_argument("--ring", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-review"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--decisions-per-case", type=int, default=5, help="Record size: decisions per referred one."
    )
    parser.add_argument("--screenshots", type=Path, help="Save the demo's queue and a case here (PNG).")
    parser.add_argument("--demo", type=Path, default=Path("data/quickstart/store"), help="The demo store.")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.demo, args.screenshots, args.port, args.repeats)
        return
    decisions, online, ring_case = build(args.work, args.open_cases, args.ring, args.decisions_per_case)
    wanted = QueueFilter()

    def cold() -> None:
        book = CaseBook(decisions, online)
        render_queue(book.queue(None, wanted), wanted)

    warm_book = CaseBook(decisions, online)
    warm_book.queue(None, wanted)
    page = warm_book.queue(None, wanted)
    print(
        f"queue: {page.matched_cases:,} open cases in {page.matched_groups:,} rings, {page.pages} pages, "
        f"in a record of {args.open_cases * args.decisions_per_case:,} decisions"
    )
    print(f"queue page, cold (cases read and grouped, HTML):  {median_ms(cold, args.repeats):7.1f} ms")
    warm = median_ms(lambda: render_queue(warm_book.queue(None, wanted), wanted), args.repeats)
    print(f"queue page, warm (record unchanged, HTML):        {warm:7.1f} ms")

    case = warm_book.case(ring_case)
    known_at = micros(datetime.fromisoformat(case.applied_at)) + 10**12  # every member known

    def draw() -> str:
        with read_only(online) as con:
            group = linked_group(con, ring_case, known_at_us=known_at, max_applications=args.ring)
        return render_svg(group, bands={}, dispositions={}, href=lambda a: f"/review/cases/{a}")

    with read_only(online) as con:
        size = len(
            linked_group(con, ring_case, known_at_us=known_at, max_applications=args.ring).applications
        )
    print(
        f"case graph: {size} applications read, laid out and drawn: {median_ms(draw, args.repeats):7.1f} ms"
    )
    print(json.dumps({"open_cases": page.matched_cases, "graph_applications": size}))


if __name__ == "__main__":
    main()

"""What each generator scenario changes in its rings, measured on the files it writes.

    .venv/bin/python bench/bench_scenarios.py                      # 50,000 applications, 12 months, seed 1
    .venv/bin/python bench/bench_scenarios.py --scenarios default sent_alone adapted

For each scenario it generates a bank with ``duanka generate`` and reads only the contract's
files and ``truth.csv``, as an outside reader would: the share of ring openings that record an
escort (all, and of their counter openings), give a countryside (village) address, or give an
address in another province than the branch; the home counties (first six ID digits) per ring;
and, for comparison, the legitimate openings with a village address. It prints a markdown table,
one column per scenario (docs/synthetic.md holds the figures).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from duanka.data.address import address_kinds, address_provinces
from duanka.data.synthetic import ScenarioName, generate_bank


def measures(folder: Path) -> dict[str, str]:
    """The figures of one generated bank, formatted."""
    apps = pd.read_csv(folder / "applications.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(folder / "truth.csv", dtype=str, keep_default_na=False)
    rows = apps.merge(truth, on="application_id", validate="1:1")
    ring, legit = rows[rows["scheme"] == "escort_ring"], rows[rows["scheme"] == "legit"]
    counter = ring[ring["channel"] == "counter"]
    province = address_provinces(ring["address"])
    elsewhere = province.notna() & (province != ring["branch_region"].str[:2])
    counties = ring.groupby("group_id")["id_number"].agg(lambda ids: ids.str[:6].nunique())
    village = address_kinds(ring["address"]) == "village"
    legit_village = address_kinds(legit["address"]) == "village"
    return {
        "rings": f"{ring['group_id'].nunique():,}",
        "ring openings with an escort_id": f"{(ring['escort_id'] != '').mean():.3f}",
        "… of their counter openings": f"{(counter['escort_id'] != '').mean():.3f}",
        "ring openings with a village address": f"{village.mean():.3f}",
        "ring openings with an address in another province than the branch": f"{elsewhere.mean():.3f}",
        "home counties per ring (median)": f"{counties.median():.1f}",
        "legitimate openings with a village address": f"{legit_village.mean():.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=[s.value for s in ScenarioName])
    parser.add_argument("--applications", type=int, default=50_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    table: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenarios:
            bank = generate_bank(
                Path(tmp) / name,
                months=args.months,
                applications=args.applications,
                seed=args.seed,
                scenario=name,
            )
            table[name] = measures(bank.applications.parent)
    names = list(table)
    print(f"| measure | {' | '.join(names)} |")
    print("|---|" + "---|" * len(names))
    for measure in table[names[0]]:
        print(f"| {measure} | {' | '.join(table[n][measure] for n in names)} |")
    size = f"--applications {args.applications} --months {args.months} --seed {args.seed}"
    command = f"bench/bench_scenarios.py {size}"
    print(f"\n{args.applications:,} applications, {args.months} months, seed {args.seed} (`{command}`)")


if __name__ == "__main__":
    main()

"""How fast the synthetic bank is written, and in how much memory.

Prints rows, seconds, rows/s and the peak resident memory of the process (which
includes the interpreter and the imported libraries, about 100 MB):

    .venv/bin/python bench/bench_generate.py --applications 1000000 --months 12 --out /tmp/bank

Targets: 1M applications in under 60 s, 10M in under 10 minutes on 2 cores, peak
memory under 8 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from duanka.data.synthetic import generate_bank


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--out", type=Path, help="folder to write into (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        began = time.perf_counter()
        bank = generate_bank(
            out, months=args.months, applications=args.applications, seed=args.seed, start=args.start
        )
        seconds = time.perf_counter() - began
        size = sum(p.stat().st_size for p in (bank.applications, bank.labels, bank.truth))
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(f"rows          {bank.n_applications:>14,}")
    print(f"mules         {bank.n_mules:>14,}")
    print(f"labels        {bank.n_labels:>14,}")
    print(f"seconds       {seconds:>14.1f}")
    print(f"rows/s        {bank.n_applications / seconds:>14,.0f}")
    print(f"peak RSS MiB  {peak / 2**20:>14,.0f}")
    print(f"files MiB     {size / 2**20:>14,.0f}")


if __name__ == "__main__":
    main()

"""Figures for the cluster fit: lightgbm.dask against the local fit on the same rows.

    .venv/bin/python bench/bench_dask_fit.py --rows 1000000 --workers 2

Rows are drawn with scikit-learn's ``make_classification`` (63 features, about 1 % positives,
as the training sets are) and split 80/10/10 into training, validation and test. Both fits use
the model's shipped parameters and downsampling; the local one stops early on the validation
rows, the cluster one runs every round and keeps the best (training/dask_fit.py). Printed: wall
time of each fit, test average precision, and the round chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sklearn.datasets import make_classification
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from duanka.training.dask_fit import DaskMuleClassifier
from duanka.training.model import MuleClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    X, y = make_classification(
        n_samples=args.rows,
        n_features=63,
        n_informative=20,
        weights=[0.99],
        flip_y=0.002,
        random_state=args.seed,
    )
    a, b = int(0.8 * args.rows), int(0.9 * args.rows)
    names = [f"f{i}" for i in range(X.shape[1])]
    print(f"{args.rows:,} rows x {X.shape[1]} features, {y.mean():.2%} positive; train/valid/test 80/10/10")

    t0 = time.perf_counter()
    local = MuleClassifier(random_state=args.seed).fit(
        X[:a], y[:a], eval_set=(X[a:b], y[a:b]), feature_names=names
    )
    local_s = time.perf_counter() - t0
    local_ap = average_precision_score(y[b:], local.decision_function(X[b:]))
    print(
        f"local fit (2 threads): {local_s:6.1f} s, test AP {local_ap:.4f}, "
        f"round {local.booster_.best_iteration} (early stopping)"
    )

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        spread = DaskMuleClassifier(client=client, random_state=args.seed).fit(
            X[:a], y[:a], eval_set=(X[a:b], y[a:b]), feature_names=names
        )
        spread_s = time.perf_counter() - t0
    spread_ap = average_precision_score(y[b:], spread.decision_function(X[b:]))
    print(
        f"lightgbm.dask ({args.workers} workers x 1 thread): {spread_s:6.1f} s, test AP {spread_ap:.4f}, "
        f"round {spread.booster_.best_iteration} of {spread.booster_.num_trees()} (best on validation)"
    )


if __name__ == "__main__":
    main()

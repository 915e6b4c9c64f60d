"""What one explanation costs: TreeSHAP per row for the shipped tree shape against a deeper one.

    .venv/bin/duanka quickstart                       # once, in an empty folder: a trained run
    MLFLOW_TRACKING_URI=sqlite:///models/mlflow.db \\
        /work/main/.venv/bin/python /work/main/bench/bench_explain.py [--model models:/duanka@champion]

Both shapes are refitted on the registered run's evaluation frame (its training sample and
validation months, same downsampling and early stopping) and measured on its test months:
trees, mean leaf depth, PR-AUC, and the time of one-row ``pred_contrib`` and of a whole
:meth:`ReasonExplainer.explain` call (contributions and reason texts), median of repeats.
docs/model.md records the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow
import pandas as pd
from sklearn.metrics import average_precision_score

from duanka.training.bundle import ScoringBundle, load_registered, resolve_model_uri
from duanka.training.explain import ReasonExplainer
from duanka.training.model import MuleClassifier
from duanka.training.split import TEST, TRAIN, VALID

SHAPES = {
    "shipped (max_depth 6, 31 leaves)": {"max_depth": 6, "num_leaves": 31},
    "deeper (unlimited depth, 63 leaves)": {"max_depth": -1, "num_leaves": 63},
}


def mean_leaf_depth(booster) -> float:
    depths: list[int] = []

    def walk(node: dict, depth: int) -> None:
        if "split_index" not in node:
            depths.append(depth)
            return
        walk(node["left_child"], depth + 1)
        walk(node["right_child"], depth + 1)

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"], 0)
    return float(np.mean(depths))


def per_row_ms(call, rows: np.ndarray, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean time of one-row calls, in ms."""
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(rows)):
            call(rows[i : i + 1])
        passes.append((time.perf_counter() - start) / len(rows) * 1000)
    return statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="registered model whose run provides the data")
    parser.add_argument("--rows", type=int, default=300, help="test rows explained one at a time")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    client = mlflow.MlflowClient()
    model = load_registered(resolve_model_uri(args.model, client), client)
    frame = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=model.run_id, artifact_path="evaluation_frame.parquet")
    )
    names = model.bundle.feature_names
    parts = {p: frame.loc[frame["part"] == p] for p in (TRAIN, VALID, TEST)}
    X = {p: rows.loc[:, names].to_numpy(dtype=float) for p, rows in parts.items()}
    y = {p: rows["label"].to_numpy().astype(int) for p, rows in parts.items()}
    sample = X[TEST][np.random.default_rng(0).choice(len(X[TEST]), size=args.rows, replace=False)]

    print(f"{model.uri} v{model.version}: {len(X[TRAIN]):,} train / {len(X[TEST]):,} test rows")
    print(
        f"{'shape':<38}{'trees':>6}{'depth':>7}{'PR-AUC':>8}"
        f"{'contrib ms':>12}{'explain ms':>12}{'batch ms':>10}"
    )
    for label, shape in SHAPES.items():
        fitted = MuleClassifier(**shape).fit(
            X[TRAIN], y[TRAIN], eval_set=(X[VALID], y[VALID]), feature_names=names
        )
        booster = fitted.booster_
        booster = booster.__class__(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
        bundle = ScoringBundle(booster, model.bundle.calibrator, model.bundle.bands, names, "bench", "bench")
        explainer = ReasonExplainer(bundle)
        pr_auc = average_precision_score(y[TEST], booster.predict(X[TEST], raw_score=True))
        contrib = per_row_ms(partial(booster.predict, pred_contrib=True, num_threads=1), sample, args.repeats)
        explain = per_row_ms(explainer.explain, sample, args.repeats)
        start = time.perf_counter()
        explainer.explain(X[TEST][:5_000])
        batch = (time.perf_counter() - start) / min(5_000, len(X[TEST])) * 1000
        print(
            f"{label:<38}{booster.num_trees():>6}{mean_leaf_depth(booster):>7.1f}{pr_auc:>8.3f}"
            f"{contrib:>12.2f}{explain:>12.2f}{batch:>10.3f}"
        )


if __name__ == "__main__":
    main()

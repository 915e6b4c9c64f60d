"""Bounded hyperparameter search (optuna), behind ``duanka train --tune-trials N``.

The search space stops at depth 8 and 63 leaves: explanation cost grows with
leaves x depth^2 (docs/model.md), and a branch waits for the explanation. Trials
are judged on validation average precision; the test months stay untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from duanka.training.model import MuleClassifier


def search_space(trial) -> dict[str, float | int]:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 15, 63),
        "max_depth": trial.suggest_int("max_depth", 4, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.15, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 20, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.25, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def tune(
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    feature_names: list[str],
    *,
    n_trials: int,
    negative_rate: float,
    seed: int,
    timeout_seconds: float | None = 1800,
    monotone_constraints: Sequence[int] | None = None,
) -> dict[str, float | int]:
    """Best parameters after at most ``n_trials`` trials (or ``timeout_seconds``).

    Seeded TPE sampling, so the same data and seed give the same search. Every trial is
    fitted under ``monotone_constraints`` (:class:`~duanka.training.model.MuleClassifier`'s),
    the constraints the chosen parameters will be fitted under.
    """
    try:
        import optuna
    except ImportError:  # an optional extra: say how to get it rather than fail obscurely
        raise RuntimeError("--tune-trials needs optuna: pip install 'duanka[tune]'") from None
    from sklearn.metrics import average_precision_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial) -> float:
        model = MuleClassifier(
            negative_rate=negative_rate,
            random_state=seed,
            monotone_constraints=monotone_constraints,
            **search_space(trial),
        )
        model.fit(X, y, eval_set=(X_valid, y_valid), feature_names=feature_names)
        return float(average_precision_score(y_valid, model.decision_function(X_valid)))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, show_progress_bar=False)
    return dict(study.best_params)

"""Training runs: splits, LightGBM, calibration, baselines, evaluation, explanations, report, MLflow."""

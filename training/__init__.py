"""Training runs: splits, LightGBM, calibration, baselines, evaluation, explanations, the model report, MLflow."""

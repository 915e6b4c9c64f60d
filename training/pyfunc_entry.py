"""MLflow models-from-code entry point: the logged model is this file, not a pickle.

MLflow copies this file into the model and runs it on load; the booster and
calibrator come from the model's artifacts and are hash-checked there.
"""

import mlflow

from duanka.training.bundle import DuankaPyfunc

mlflow.models.set_model(DuankaPyfunc())

"""What each model that decided promised: its monitoring reference and its tested performance.

Each model of the record is found in the registry by the name and version its decisions name,
and trusted only if the version's ``booster_sha256`` tag is the booster that decided. From it
come the monitoring reference (:mod:`duanka.training.monitoring_reference`, verified against
its SHA-256 tag) and the evidence model's out-of-time test figures with their bootstrap
intervals (the run's ``lightgbm.test_*`` metrics), against which live recall and precision at
the bands are read. A model registered before references were stored has none, and says so.

The monitoring caches what it finds here in its sidecar (:mod:`duanka.serving.monitor.sidecar`):
a registered version never changes, so the registry is asked once per model, not per run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from duanka.training.bands import ALERT_BUDGET
from duanka.training.metrics import precision_key, recall_key
from duanka.training.monitoring_reference import REFERENCE_FILE, REFERENCE_TAG, MonitoringReference

if TYPE_CHECKING:
    import mlflow

NO_REFERENCE = "no reference stored with this model"
# Each band's "at or above" share of openings under the budget: critical is the top 0.5 %, an
# alert (high or critical) the top 2 %, medium or higher the top 5 %: the alert rates at which
# training measured recall and precision.
BAND_RATES: dict[str, float] = {
    "critical": ALERT_BUDGET["critical"],
    "alert": ALERT_BUDGET["critical"] + ALERT_BUDGET["high"],
    "medium+": ALERT_BUDGET["critical"] + ALERT_BUDGET["high"] + ALERT_BUDGET["medium"],
}


@dataclass(frozen=True)
class Baseline:
    """One model of the record: its reference and its tested figures at the bands.

    Attributes
    ----------
    booster_sha256, model_version : str
        The model, as its decisions name it.
    reference : MonitoringReference or None
        None for a model registered without one (``note`` says why).
    expected : dict
        ``"recall critical"``, ``"precision alert"``, ... to ``(value, low, high)``: the evidence
        model's test figure at the band's alert rate (:data:`BAND_RATES`) and its 95 % interval.
    settled : bool
        False when the registry could not be asked: asked again on the next run.
    note : str
        Why there is no reference, when there is none.
    """

    booster_sha256: str
    model_version: str
    reference: MonitoringReference | None = None
    expected: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    settled: bool = True
    note: str = ""

    @property
    def reference_sha256(self) -> str:
        return "" if self.reference is None else self.reference.sha256()

    def to_json(self) -> str:
        return json.dumps(
            {
                "reference": None if self.reference is None else self.reference.text(),
                "expected": {k: list(v) for k, v in self.expected.items()},
                "note": self.note,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(
        cls, booster_sha256: str, model_version: str, text: str, *, settled: bool = True
    ) -> Baseline:
        """The baseline :meth:`to_json` wrote."""
        raw = json.loads(text)
        reference = raw["reference"]
        return cls(
            booster_sha256,
            model_version,
            None if reference is None else MonitoringReference.from_text(reference),
            {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in raw["expected"].items()},
            settled,
            str(raw.get("note", "")),
        )


BaselineResolver = Callable[[str, str], Baseline]
"""``(booster_sha256, model_version) -> Baseline``: how the monitoring finds a model's baseline."""


def no_baselines(booster_sha256: str, model_version: str) -> Baseline:
    """A resolver for a record whose models are nowhere to be found: every model without reference."""
    return Baseline(booster_sha256, model_version, note=NO_REFERENCE)


def expected_at_bands(metrics: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """The evidence model's test recall and precision at each band's rate, from a run's metrics."""
    from duanka.training.tracking import metric_key

    found = {}
    for band, rate in BAND_RATES.items():
        for kind, key in (("recall", recall_key(rate)), ("precision", precision_key(rate))):
            name = metric_key(f"lightgbm.test_{key}")
            if name in metrics:
                found[f"{kind} {band}"] = (
                    metrics[name],
                    metrics.get(f"{name}_ci_low", math.nan),
                    metrics.get(f"{name}_ci_high", math.nan),
                )
    return found


def registry_resolver(client: mlflow.MlflowClient, model_name: str = "duanka") -> BaselineResolver:
    """Baselines from the model registry ``client`` reaches (MLflow imported by the caller)."""
    import mlflow

    from duanka.training.bundle import sha256_text

    def resolve(booster_sha256: str, model_version: str) -> Baseline:
        try:
            version = client.get_model_version(model_name, model_version)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return Baseline(
                    booster_sha256, model_version, note=f"version {model_version} is not registered"
                )
            return Baseline(booster_sha256, model_version, settled=False, note=f"registry: {exc.message}")
        if version.tags.get("booster_sha256") != booster_sha256:
            return Baseline(
                booster_sha256,
                model_version,
                note=f"registered version {model_version} is another booster than the one that decided",
            )
        expected = expected_at_bands(client.get_run(version.run_id).data.metrics)
        sha = version.tags.get(REFERENCE_TAG)
        if sha is None:
            return Baseline(booster_sha256, model_version, expected=expected, note=NO_REFERENCE)
        try:
            # the client's registry, not the process-wide one (a worker process has none set)
            local = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=REFERENCE_FILE, tracking_uri=client.tracking_uri
            )
            text = Path(local).read_text(encoding="utf-8")
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            return Baseline(booster_sha256, model_version, expected=expected, settled=False, note=str(exc))
        if sha256_text(text) != sha:
            return Baseline(
                booster_sha256,
                model_version,
                expected=expected,
                note="the stored reference differs from the one registered: not used",
            )
        return Baseline(booster_sha256, model_version, MonitoringReference.from_text(text), expected)

    return resolve

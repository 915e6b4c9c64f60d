"""The one typed place for paths, secrets and tunables.

Everything reads :func:`get_settings`; values come from the environment
(``DUANKA_*``, and ``MLFLOW_TRACKING_URI``) or their defaults here.
Nothing is read or created at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SHANGHAI = "Asia/Shanghai"


class Settings(BaseSettings):
    """duanka configuration, from the environment (``DUANKA_`` + the field's name in capitals);
    docs/configuration.md describes each variable."""

    model_config = SettingsConfigDict(env_prefix="DUANKA_", extra="ignore")

    data_dir: Path = Path("data/store")
    models_dir: Path = Path("models")
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI")
    )
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None
    outcome_window_days: int = Field(default=180, gt=0)
    # the demo bank's seed (duanka quickstart)
    seed: int = 20240101
    # serving: unset paths live under ``<data dir>/serving/`` (serving.state.ServingPaths)
    api_keys_file: Path | None = None
    audit_db: Path | None = None
    # the decision record's chain key (serving.chain); unset: derived from the pseudonym key
    audit_chain_key: SecretStr | None = None
    audit_chain_key_file: Path | None = None
    # signs registered models at training and is required of them when loading (training.signing)
    model_signing_key: SecretStr | None = None
    model_signing_key_file: Path | None = None
    # how often the service logs the record's head, the anchor to keep elsewhere
    audit_anchor_every_s: float = Field(default=600.0, gt=0)
    # the service takes applications dated from the newest recorded minus this to the clock plus this
    backdating_tolerance_s: float = Field(default=600.0, ge=0)
    model_poll_seconds: float = Field(default=30.0, ge=0)
    # clients (serving.admission): requests per API key in the `limits` notation ("50/second;2000/minute"),
    # requests in flight before 503, and how long headers, a body and an idle connection may take
    rate_limit: str = "200/second"
    max_in_flight: int = Field(default=32, gt=0)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    # band cuts refreshed each local midnight from the scores of this many days before it, once
    # the window holds this many scores (training.bands.RefreshPolicy; docs/model.md)
    band_refresh_days: int = Field(default=14, gt=0)
    band_refresh_min_scores: int = Field(default=2_000, gt=0)
    # --engine dask: where a run's stages are written; every worker must reach it (docs/scale-out.md)
    scratch_dir: Path | None = None
    # the offline builder's DuckDB; measured at 3M applications: same build time as 3GB, 0.9 GiB less
    # at the peak. A key with millions of applications needs more (docs/scale-out.md, 50M run).
    duckdb_memory_limit: str = "2GB"

    def tracking_uri(self) -> str:
        """MLflow tracking store: the environment's, else SQLite under ``models_dir``."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    def artifact_root(self) -> str:
        return (self.models_dir / "artifacts").resolve().as_uri()


def configured_secret(
    value: SecretStr | None, file: Path | None, variable: str, *, min_bytes: int, error: type[Exception]
) -> bytes | None:
    """A secret from ``variable``, else from the file its ``_FILE`` variable names (both stripped);
    None when neither holds one.

    Raises
    ------
    error
        The file cannot be read, or the secret is shorter than ``min_bytes``.
    """
    secret: bytes | None = None
    source = variable
    if value is not None:
        secret = value.get_secret_value().strip().encode("utf-8") or None
    if secret is None and file is not None:
        source = f"{variable}_FILE ({file})"
        try:
            secret = file.read_bytes().strip() or None
        except OSError as exc:
            raise error(f"cannot read {source}: {exc.strerror}") from None
    if secret is not None and len(secret) < min_bytes:
        raise error(f"{source} has {len(secret)} bytes, needs at least {min_bytes}")
    return secret


def effective_settings(settings: Settings) -> list[tuple[str, str]]:
    """Each setting's variable and its value in force, secrets shown only as set or not set."""
    shown = []
    for name, field in Settings.model_fields.items():
        variable = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"DUANKA_{name.upper()}"
        value = getattr(settings, name)
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            text = "(not set)" if value is None else "(set, not shown)"
        elif value is None:
            text = "(not set)"
        elif name == "mlflow_tracking_uri":
            text = _without_password(str(value))
        else:
            text = str(value)
        shown.append((variable, text))
    return shown


def _without_password(uri: str) -> str:
    """A tracking server URI as it may be shown: a password in it becomes ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

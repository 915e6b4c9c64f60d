"""The one typed place for paths, secrets and tunables.

Everything reads :func:`get_settings`. Each value comes from the first of, highest first: the
arguments to ``Settings(...)``, the environment (``DUANKA_*``, and ``MLFLOW_TRACKING_URI``),
the TOML file ``DUANKA_CONFIG_FILE`` names (none by default), and the defaults here.
Secrets come only from the environment or the files their ``*_FILE`` variables name: the
TOML file is meant to be checked in or mounted where others read it, so it may not hold one.
Nothing is read or created at import time.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SHANGHAI = "Asia/Shanghai"
CONFIG_FILE_VARIABLE = "DUANKA_CONFIG_FILE"

Source = Literal["default", "file", "environment", "argument"]
"""Where a setting's value in force came from (``duanka config show``)."""

# The fields each source gave while one Settings(...) is being built; None outside a build. A
# context variable rather than an attribute: pydantic-settings gathers the values before the
# instance exists, and Settings.__init__ moves them onto it.
_RECORDING: ContextVar[dict[str, Source] | None] = ContextVar("duanka_settings_sources", default=None)


class ConfigFileError(ValueError):
    """The configuration file cannot be used.

    It is missing, unreadable or not TOML, or holds a key it may not (an unknown setting, a
    secret, a table) or a value of the wrong type. The message names the file and, where it
    can, the line, and lists every problem found, not only the first.
    """


class Settings(BaseSettings):
    """duanka configuration: ``DUANKA_`` + the field's name in capitals in the environment, or the
    field's name in the TOML file ``DUANKA_CONFIG_FILE`` names; docs/configuration.md describes each.
    """

    model_config = SettingsConfigDict(env_prefix="DUANKA_", extra="ignore")

    # the TOML file of non-secret settings (docs/configuration.md); only read when named, so
    # that no file in whatever folder a command runs from changes what it does
    config_file: Path | None = None
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
    # the decision record's chain key (serving.chain): required outside a demo store
    audit_chain_key: SecretStr | None = None
    audit_chain_key_file: Path | None = None
    # signs registered models at training and is required of them when loading (training.signing)
    model_signing_key: SecretStr | None = None
    model_signing_key_file: Path | None = None
    # how often the service emits the record's signed head, the anchor to keep elsewhere, and where
    # (serving.anchor): a file a log shipper takes off the host, syslog (HOST:PORT or a socket path)
    audit_anchor_every_s: float = Field(default=600.0, gt=0)
    audit_anchor_file: Path | None = None
    audit_anchor_syslog: str | None = None
    # the service takes applications dated from its clock minus the first to its clock plus the
    # second: bounds no caller's input moves (serving.scorer)
    backdating_tolerance_s: float = Field(default=600.0, ge=0)
    future_tolerance_s: float = Field(default=60.0, ge=0)
    model_poll_seconds: float = Field(default=30.0, ge=0)
    # how often the service drops from its online state what no feature window reaches any more
    prune_every_s: float = Field(default=3600.0, gt=0)
    # how often the service runs the monitoring plan over the decisions recorded since its last run
    # (serving.monitor.live): what /metrics' monitoring gauges are as of, and what /monitor adds to
    monitor_every_s: float = Field(default=300.0, gt=0)
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

    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        recorded: dict[str, Source] = {}
        token = _RECORDING.set(recorded)
        try:
            super().__init__(**values)
        finally:
            _RECORDING.reset(token)
        self._sources = recorded

    @field_validator("config_file", mode="before")
    @classmethod
    def _empty_is_no_file(cls, value: object) -> object:
        # DUANKA_CONFIG_FILE= (set but empty) reads no file, as the source does; not Path(".")
        return None if value == "" else value

    @field_validator("audit_anchor_syslog")
    @classmethod
    def _a_syslog_address(cls, value: str | None) -> str | None:
        if not value:  # set but empty: no syslog, as an unset variable
            return None
        syslog_address(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the TOML file, then (pydantic-settings) defaults.

        The .env and secrets-directory sources are kept in their usual places though neither is
        configured, so configuring one later behaves as pydantic-settings documents.
        """
        config_file = ConfigFileSource(settings_cls)
        # pydantic-settings names each source's values by its class (main._settings_build_values)
        labels: dict[str, Source] = {
            type(init_settings).__name__: "argument",
            type(env_settings).__name__: "environment",
            type(dotenv_settings).__name__: "environment",
            type(config_file).__name__: "file",
        }
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            config_file,
            file_secret_settings,
            _SourceRecorder(settings_cls, labels),
        )

    def source_of(self, name: str) -> Source:
        """Where the value in force of the setting ``name`` came from.

        Parameters
        ----------
        name : str
            A field name (``data_dir``).

        Returns
        -------
        Source
            ``"argument"``, ``"environment"``, ``"file"`` or ``"default"``; a value given
            equal to its default still names the source that gave it.
        """
        if name not in type(self).model_fields:
            raise KeyError(name)
        return self._sources.get(name, "default")

    def tracking_uri(self) -> str:
        """MLflow tracking store: the configured one (environment or file), else SQLite under
        ``models_dir``."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    def artifact_root(self) -> str:
        return (self.models_dir / "artifacts").resolve().as_uri()


def default_of(name: str) -> Any:
    """The default of the setting ``name``.

    The typed configurations built from the settings (admission, band refresh, the service)
    take their own defaults from here, so that each default is written once, in :class:`Settings`.

    Raises
    ------
    KeyError
        ``name`` is no setting.
    """
    return Settings.model_fields[name].get_default(call_default_factory=True)


def syslog_address(text: str) -> str | tuple[str, int]:
    """A syslog address as :class:`logging.handlers.SysLogHandler` takes it: ``HOST:PORT`` or
    ``HOST`` (UDP, port 514), or an absolute socket path (``/dev/log``).

    Raises
    ------
    ValueError
        Anything else, or a port outside 1-65535.
    """
    if text.startswith("/"):
        return text
    host, colon, port = text.rpartition(":") if ":" in text else (text, "", "514")
    if not host or (colon and not port.isdigit()) or not 1 <= int(port or 0) <= 65535:
        raise ValueError(
            f"not a syslog address: {text!r} (HOST:PORT, HOST, or a socket path such as /dev/log)"
        )
    return host.strip("[]"), int(port)


def variable_of(name: str) -> str:
    """The environment variable of the setting ``name`` (``data_dir`` -> ``DUANKA_DATA_DIR``)."""
    return "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"DUANKA_{name.upper()}"


def is_secret(field: FieldInfo) -> bool:
    """Whether a setting holds a secret itself (its ``*_file`` companion holds only a path)."""
    return field.annotation is not None and "SecretStr" in str(field.annotation)


class ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML file named by ``config_file`` (an argument, else ``DUANKA_CONFIG_FILE``).

    The file is read by pydantic-settings' own :class:`TomlConfigSettingsSource`; this source
    decides which file, and refuses one that holds what it may not (:func:`check_config_file`)
    rather than letting ``extra="ignore"`` drop a misspelt key in silence.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # the file is read whole in __call__; pydantic-settings asks nothing per field of it
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # the arguments and the environment, merged by precedence, are the state before this source
        named = self.current_state.get("config_file")
        if named is None or named == "":
            return {}
        path = Path(named)
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigFileError(f"configuration file {path} ({CONFIG_FILE_VARIABLE}) {problem}")
        try:
            toml = TomlConfigSettingsSource(self.settings_cls, toml_file=path)
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigFileError(f"cannot read configuration file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigFileError(f"configuration file {path} is not UTF-8 text") from None
        except ValueError as exc:  # tomllib.TOMLDecodeError, which says the line and column
            raise ConfigFileError(f"configuration file {path} is not valid TOML: {exc}") from None
        check_config_file(path, toml.toml_data, text)
        return toml()


class _SourceRecorder(PydanticBaseSettingsSource):
    """No values: notes which source gave each setting (the first, in precedence order)."""

    def __init__(self, settings_cls: type[BaseSettings], labels: dict[str, Source]) -> None:
        super().__init__(settings_cls)
        self.labels = labels

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        recorded = _RECORDING.get()
        if recorded is None:
            return {}
        fields = self.settings_cls.model_fields
        # in the order the sources ran, which is precedence order: the first to give a key gave it
        for source_name, values in self.settings_sources_data.items():
            label = self.labels.get(source_name)
            if label is None:
                continue
            for key in values:
                # a key is a field's name or its alias (MLFLOW_TRACKING_URI), in any case
                if key.lower() in fields:
                    recorded.setdefault(key.lower(), label)
        return {}


def check_config_file(path: Path, data: dict[str, Any], text: str) -> None:
    """Refuse a configuration file holding anything but known, non-secret settings of valid values.

    Parameters
    ----------
    path : Path
        The file, for the message.
    data : dict
        Its parsed contents.
    text : str
        Its text, to find the line of each problem.

    Raises
    ------
    ConfigFileError
        Listing every problem: an unknown key (a typo would otherwise be ignored), a table (the
        settings are top-level keys), ``config_file`` itself, a secret, a tracking URI holding a
        password, or a value its setting does not accept.
    """
    fields = Settings.model_fields
    problems = []
    for key, value in data.items():
        name = key.lower()  # pydantic-settings matches the file's keys as it does variables: any case
        line = _line_of(text, key)
        where = f"line {line}: " if line else ""
        if isinstance(value, dict):
            problems.append(f"{where}[{key}] is a table; settings are top-level keys (data_dir = ...)")
        elif name not in fields:
            bare = name.removeprefix("duanka_")
            hint = f"; write {bare}, without DUANKA_" if bare != name and bare in fields else ""
            problems.append(f"{where}{key} is no setting{hint} (docs/configuration.md lists them)")
        elif name == "config_file":
            problems.append(f"{where}{key} names the file itself: set {CONFIG_FILE_VARIABLE} instead")
        elif is_secret(fields[name]):
            problems.append(
                f"{where}{key} is a secret, and this file is meant to be read by others: set "
                f"{variable_of(name)} or {variable_of(name)}_FILE (a file holding it) in the environment, "
                f"or {name}_file here"
            )
        elif name == "mlflow_tracking_uri" and isinstance(value, str) and urlsplit(value).password:
            problems.append(f"{where}{key} holds a password: set MLFLOW_TRACKING_URI in the environment")
        else:
            problem = _invalid(fields[name], value)
            if problem:
                problems.append(f"{where}{key} = {value!r}: {problem}")
    if problems:
        raise ConfigFileError(f"configuration file {path}: " + "; ".join(problems))


def _invalid(field: FieldInfo, value: object) -> str | None:
    """Why ``value`` is no valid value of ``field``, or None; checked here so that the message
    names the file and line, which pydantic's own error (raised later) cannot."""
    kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        return "; ".join(error["msg"] for error in exc.errors())
    return None


def _line_of(text: str, key: str) -> int | None:
    """The line where ``key`` is set (bare or quoted, or as the start of a dotted key or table)."""
    name = re.escape(key)
    # [ \t], not \s: \s would cross a blank line before the key and report that line
    pattern = rf"^[ \t]*(\[[ \t]*)?(?:{name}|\"{name}\"|'{name}')[ \t]*[.=\]]"
    found = re.search(pattern, text, flags=re.MULTILINE)
    return None if found is None else text.count("\n", 0, found.start()) + 1


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


class ShownSetting(NamedTuple):
    """One line of ``duanka config show``."""

    variable: str
    value: str
    source: Source


def effective_settings(settings: Settings) -> list[ShownSetting]:
    """Each setting's variable, its value in force (secrets only as set or not set, a tracking
    URI's password as ``***``) and where that value came from."""
    shown = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if is_secret(field):
            text = "(not set)" if value is None else "(set, not shown)"
        elif value is None:
            text = "(not set)"
        elif name == "mlflow_tracking_uri":
            text = _without_password(str(value))
        else:
            text = str(value)
        shown.append(ShownSetting(variable_of(name), text, settings.source_of(name)))
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

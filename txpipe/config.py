"""Settings from the environment and an optional ``.env``, typed and validated at start, and
the command-line flags derived from them.

The names and defaults are the seed system's, so its ``.env`` files keep working. A settings
field that declares a ``flag`` becomes ``--dashed-flag`` on ``run`` / ``export-job``
(``--window-size 60``), beside the environment variable / ``.env`` name it always had
(``WINDOW_SIZE_SECONDS``); the Flex Template knows it as ``window_size``
(:mod:`txpipe.flex_template` translates). Flags override the environment by passing keyword
overrides to :func:`load_settings`; values are validated once, by the model. This module
imports no Beam: ``run --help`` and a refused flag answer without it.
``python -m txpipe.config`` prints what was loaded and ``configuration OK`` (exit 2 otherwise).
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from txpipe.errors import UsageError


class WindowType(str, Enum):
    FIXED = "fixed"
    SLIDING = "sliding"
    SESSION = "session"


class Accumulation(str, Enum):
    ACCUMULATING = "accumulating"
    DISCARDING = "discarding"


class BigQueryMethod(str, Enum):
    """How rows reach BigQuery (Beam's WriteToBigQuery methods; docs/dataflow.md section 5)."""

    STORAGE_WRITE = "storage_write"
    STREAMING_INSERTS = "streaming_inserts"
    FILE_LOADS = "file_loads"


class Detector(str, Enum):
    """Beam's streaming detectors (apache_beam.ml.anomaly.detectors) txpipe can score with."""

    IQR = "iqr"
    ROBUST_ZSCORE = "robust_zscore"
    ZSCORE = "zscore"


class Route(str, Enum):
    """How TransactionStats computes: element by element (streaming's plan, every runner and
    spec), or in batches (bounded input only; see txpipe.batch)."""

    ELEMENTWISE = "element-wise"
    BATCHED = "batched"


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


_ID = r"^[A-Za-z][A-Za-z0-9_.~+%-]{0,254}$"


class Settings(BaseSettings):
    """Everything the pipeline, the simulator and the local stack are configured with."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True,
        case_sensitive=False, use_enum_values=False,
    )

    # A field with a ``flag`` is also a command-line flag of ``run`` / ``export-job``
    # (SettingFlag below): ENV_NAME and --dashed-flag; with a ``label`` also a Flex Template
    # parameter (txpipe.flex_template, underscored). ``beam`` marks flags Beam itself defines.
    project_id: str = Field("txpipe-local", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
                            description="Google Cloud project (any valid id for the emulators)",
                            json_schema_extra={"flag": "project", "beam": True})
    region: str = Field("us-central1", pattern=r"^[a-z]+-[a-z]+[0-9]$",
                        description="Google Cloud region of the Dataflow job",
                        json_schema_extra={"flag": "region", "beam": True})
    pubsub_topic_id: str = Field("transactions", pattern=_ID)
    pubsub_subscription_id: str = Field("transactions-sub", pattern=_ID)
    pubsub_dead_letter_topic_id: str = Field("transactions-dead-letters", pattern=_ID)
    pubsub_timestamp_attribute: str = Field(
        "event_ts", pattern=r"^[A-Za-z0-9_.~+%-]{0,256}$",
        description="the message attribute the Pub/Sub read takes event times from (the "
        "watermark follows them); empty: the publish time — for publishers whose attribute "
        "cannot be trusted (Parse still windows each transaction by its payload timestamp)",
        json_schema_extra={"flag": "timestamp-attribute", "label": "Event-time attribute"})
    bigquery_dataset_id: str = Field(
        "streaming_data_warehouse_v2", pattern=r"^[A-Za-z0-9_]{1,1024}$",
        description="bigquery sink: dataset", json_schema_extra={"flag": "bigquery-dataset", "label": "BigQuery dataset"})
    bigquery_table_id: str = Field(
        "hourly_sales_aggregation", pattern=r"^[A-Za-z0-9_]{1,1024}$",
        description="bigquery sink: window table (also the DuckDB table name)",
        json_schema_extra={"flag": "bigquery-table", "label": "BigQuery window table"})
    bigquery_dead_letter_table_id: str = Field("dead_letters", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    bigquery_method: BigQueryMethod | None = Field(
        None, description="bigquery sink: storage_write, streaming_inserts or file_loads "
        "(default: file_loads for a replay, streaming_inserts for a stream)",
        json_schema_extra={"flag": "bigquery-method", "label": "BigQuery write method"})
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$",
        description="the run's id in every row it writes (default: derived from a replay's "
        "input, drawn once per streaming job); --update must repeat the running job's",
        json_schema_extra={"flag": "run-id", "label": "Run id"})
    bigquery_anomaly_table_id: str = Field(
        "anomalies", pattern=r"^[A-Za-z0-9_]{1,1024}$",
        description="anomaly table (BigQuery and DuckDB)")

    window_type: WindowType = Field(WindowType.FIXED, description="event-time window shape",
                                    json_schema_extra={"flag": "window-type", "label": "Window type"})
    window_size_seconds: int = Field(30, gt=0, le=86_400, description="window length",
                                     json_schema_extra={"flag": "window-size", "label": "Window size (seconds)"})
    window_period_seconds: int | None = Field(
        None, gt=0, description="sliding windows: how often a window starts (default: size / 2)",
        json_schema_extra={"flag": "window-period", "label": "Sliding period (seconds)"})
    session_gap_seconds: int = Field(
        60, gt=0, le=86_400, description="session windows: the gap that closes a session",
        json_schema_extra={"flag": "session-gap", "label": "Session gap (seconds)"})
    allowed_lateness_seconds: int = Field(
        30, ge=0, le=7 * 86_400, description="how long after its end a window takes late data",
        json_schema_extra={"flag": "allowed-lateness", "label": "Allowed lateness (seconds)"})
    early_firing_seconds: int = Field(
        0, ge=0, description="emit EARLY panes this often (processing time); 0 = none",
        json_schema_extra={"flag": "early-firing", "label": "Early panes every (seconds)"})
    late_firings: bool = Field(True, description="emit a LATE pane per late element",
                               json_schema_extra={"flag": "late-firings", "label": "Late panes"})
    accumulation: Accumulation = Field(
        Accumulation.ACCUMULATING, description="whether a pane repeats the earlier panes' data",
        json_schema_extra={"flag": "accumulation", "label": "Pane accumulation"})
    dedupe_horizon_seconds: int = Field(
        600, gt=0, description="how long a transaction id is remembered to drop redeliveries",
        json_schema_extra={"flag": "dedupe-horizon", "label": "Deduplication horizon (seconds)"})

    route: Route | None = Field(
        None, description="element-wise or batched; default: batched for a bounded input "
        "(replay) when the window spec allows it, element-wise otherwise (always for streaming)",
        json_schema_extra={"flag": "route"})

    # Anomaly detection on the window statistics (txpipe.anomaly); off keeps the graph as is.
    anomalies: bool = Field(False, description="score each window's count and amount (and "
                            "each --breakdown value's) for anomalies",
                            json_schema_extra={"flag": "anomalies", "label": "Anomaly detection"})
    anomaly_detector: Detector = Field(Detector.IQR, description="Beam detector that scores",
                                       json_schema_extra={"flag": "anomaly-detector", "label": "Anomaly detector"})
    anomaly_threshold: float | None = Field(
        None, gt=0, description="score at or above which a window is an anomaly (default: "
        "per detector, see txpipe.anomaly)", json_schema_extra={"flag": "anomaly-threshold", "label": "Anomaly threshold"})
    anomaly_history: int = Field(
        120, ge=4, le=100_000, description="windows of history each series' sliding tracker keeps",
        json_schema_extra={"flag": "anomaly-history", "label": "Anomaly history (windows)"})
    anomaly_warmup: int = Field(
        20, ge=1, le=100_000, description="windows a series must have before it is scored",
        json_schema_extra={"flag": "anomaly-warmup", "label": "Anomaly warm-up (windows)"})
    pubsub_alert_topic_id: str | None = Field(
        None, pattern=_ID, description="also publish each anomaly to this Pub/Sub topic (id)",
        json_schema_extra={"flag": "alert-topic", "label": "Alert topic id"})

    log_level: LogLevel = Field(LogLevel.INFO, description="log level",
                                json_schema_extra={"flag": "log-level", "label": "Log level"})
    publisher_interval: float = Field(0.5, ge=0, description="seconds between messages; 0 = flat out")
    publisher_max_messages: int = Field(0, ge=0, description="0 = endless")
    warehouse_path: str = ".local/warehouse.duckdb"
    warehouse_lock_wait_seconds: float = Field(
        20.0, ge=0, le=3600, description="how long `run` waits at start for another process "
        "(a notebook reading it) to let go of the DuckDB warehouse")
    # Local only, so no flag and no Flex Template parameter: Dataflow estimates its own watermark.
    local_estimation_band_seconds: float = Field(
        10.0, ge=0, le=3600, allow_inf_nan=False,
        description="how far the lab's local Pub/Sub read keeps its watermark behind the clock "
        "once caught up (`run`, the demo, the notebooks): every window's latency floor")

    @model_validator(mode="after")
    def _sliding_period_fits(self) -> Settings:
        period = self.window_period_seconds
        if period is not None and period > self.window_size_seconds:
            raise ValueError(  # variable names as users set them: this is the whole message
                f"WINDOW_PERIOD_SECONDS ({period}) must not exceed WINDOW_SIZE_SECONDS "
                f"({self.window_size_seconds})")
        return self

    @model_validator(mode="after")
    def _warmup_fits_history(self) -> Settings:
        if self.anomaly_warmup > self.anomaly_history:
            raise ValueError(f"ANOMALY_WARMUP ({self.anomaly_warmup}) must not exceed "
                             f"ANOMALY_HISTORY ({self.anomaly_history})")
        return self

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project_id}/topics/{self.pubsub_topic_id}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project_id}/subscriptions/{self.pubsub_subscription_id}"

    @property
    def dead_letter_topic_path(self) -> str:
        return f"projects/{self.project_id}/topics/{self.pubsub_dead_letter_topic_id}"

    @property
    def alert_topic_path(self) -> str | None:
        if not self.pubsub_alert_topic_id:
            return None
        return f"projects/{self.project_id}/topics/{self.pubsub_alert_topic_id}"

    @property
    def bigquery_anomaly_table(self) -> str:
        return f"{self.project_id}:{self.bigquery_dataset_id}.{self.bigquery_anomaly_table_id}"

    @property
    def bigquery_table(self) -> str:
        return f"{self.project_id}:{self.bigquery_dataset_id}.{self.bigquery_table_id}"

    @property
    def bigquery_dead_letter_table(self) -> str:
        return f"{self.project_id}:{self.bigquery_dataset_id}.{self.bigquery_dead_letter_table_id}"


class ConfigError(UsageError, ValueError):
    """A setting is invalid; the message is one line naming the variable."""


def describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = first.get("loc") or ()
    name = str(loc[0]).upper() if loc else "configuration"
    got = first.get("input")
    got_text = "" if loc == () or isinstance(got, dict) else f" (got {got!r})"
    message = first.get("msg", "invalid").removeprefix("Value error, ")
    more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{name}: {message}{got_text}{more}"


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Environment and ``.env`` first, then ``overrides`` (command-line flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(_env_file=env_file, **clean)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


# --- the settings as command-line flags -----------------------------------------------------

@dataclass(frozen=True)
class SettingFlag:
    field: str  # the settings field (dest)
    flag: str  # dashed name, without the leading --
    help: str
    kind: type  # int, float, str, bool or an Enum
    beam: bool  # Beam defines the option itself (--project, --region)
    label: str  # the Flex Template parameter's label ("" : not a template parameter)

    @property
    def option(self) -> str:
        return f"--{self.flag}"

    @property
    def beam_name(self) -> str:
        """The underscored name Beam's options and Flex Template parameters use."""
        return self.flag.replace("-", "_")

    @property
    def choices(self) -> list[str] | None:
        if isinstance(self.kind, type) and issubclass(self.kind, Enum):
            return [m.value for m in self.kind]
        return None

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dest": self.field, "default": None, "help": self.help}
        if self.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif self.choices:
            kwargs["choices"] = self.choices
        else:
            kwargs["type"] = self.kind
            kwargs["metavar"] = ("SECONDS" if self.field.endswith("_seconds")
                                 else self.flag.upper().replace("-", "_"))
        return kwargs


def _kind(annotation: Any) -> type:
    """``int | None`` -> int; ``WindowType`` -> WindowType."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def setting_flags() -> tuple[SettingFlag, ...]:
    """Every settings field that is also a flag, in the model's order."""
    flags = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "flag" not in extra:
            continue
        flags.append(SettingFlag(name, str(extra["flag"]), info.description or "",
                                 _kind(info.annotation), bool(extra.get("beam")),
                                 str(extra.get("label", ""))))
    return tuple(flags)


def add_setting_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add every setting flag to an argparse parser or group (``--late-firings`` /
    ``--no-late-firings`` for a yes-or-no setting)."""
    for flag in setting_flags():
        parser.add_argument(flag.option, **flag.argparse_kwargs())


def setting_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set (``None`` = not given: the environment's value stands)."""
    return {f.field: getattr(namespace, f.field, None) for f in setting_flags()}


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    for name, value in settings.model_dump(mode="json").items():
        print(f"{name.upper()}={'' if value is None else value}")
    print("configuration OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

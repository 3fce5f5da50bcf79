"""The output rows, defined once: BigQuery schema, DuckDB DDL, Arrow and JSONL derive from here.

Rows travel through the pipeline as plain dicts of Python values (``datetime`` in UTC,
``Decimal`` money, ``int``, ``str``), which Interactive Beam turns into DataFrame columns;
each sink converts them with the functions below.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from txpipe import money
from txpipe.contract import UTC, Reason, format_timestamp

# Beam and pyarrow are imported where a sink converts rows: the dashboard reads this module
# without either.


class Kind(str, Enum):
    TIMESTAMP = "TIMESTAMP"
    INTEGER = "INT64"
    MONEY = "NUMERIC"
    STRING = "STRING"
    FLOAT = "FLOAT64"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool
    description: str

    @property
    def duckdb_type(self) -> str:
        return {
            Kind.TIMESTAMP: "TIMESTAMPTZ",
            Kind.INTEGER: "BIGINT",
            Kind.MONEY: f"DECIMAL(38, {money.SCALE})",
            Kind.STRING: "VARCHAR",
            Kind.FLOAT: "DOUBLE",
        }[self.kind]


@dataclass(frozen=True)
class Table:
    """A table's columns, partitioning and the key that identifies a row across runs: a write
    whose key is already stored is a retry or a rerun, and changes nothing."""

    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    partition_column: str | None = None
    clustering: tuple[str, ...] = ()
    #: The view summing each run's panes per window (statistics tables only).
    totals_view: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def bigquery_schema(self) -> dict[str, Any]:
        """The ``{"fields": [...]}`` form WriteToBigQuery and the REST API accept."""
        return {"fields": [
            {"name": c.name, "type": c.kind.value, "mode": "REQUIRED" if c.required else "NULLABLE",
             "description": c.description}
            for c in self.columns
        ]}

    def bigquery_table_options(self) -> dict[str, Any]:
        """Partitioning and clustering, as ``additional_bq_parameters`` / tables.insert take."""
        options: dict[str, Any] = {}
        if self.partition_column:
            options["timePartitioning"] = {"type": "DAY", "field": self.partition_column}
        if self.clustering:
            options["clustering"] = {"fields": list(self.clustering)}
        return options

    def duckdb_ddl(self, table: str) -> str:
        cols = [
            f'"{c.name}" {c.duckdb_type}{" NOT NULL" if c.required else ""}' for c in self.columns
        ]
        if self.key:
            cols.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in self.key) + ")")
        return f'CREATE TABLE IF NOT EXISTS "{table}" (\n  ' + ",\n  ".join(cols) + "\n)"

    def stored_panes_sql(self, source: str) -> str:
        """Each pane stored in ``source`` once, whatever a retry or a rerun stored again, with
        ``last_pane``: its run's highest pane_index for the window — the one definition of a
        window's final pane, which the views below build on."""
        group = ", ".join(k for k in self.key if k not in ("run_id", "pane_index"))
        return (
            f"SELECT *, MAX(pane_index) OVER (PARTITION BY run_id, {group}) AS last_pane\n"
            "FROM (\n"
            f"  SELECT *, ROW_NUMBER() OVER (PARTITION BY {', '.join(self.key)} "
            "ORDER BY processed_at) AS copy\n"
            f"  FROM {source})\n"
            "WHERE copy = 1"
        )

    def totals_sql(self, source: str) -> str:
        """The totals view over ``source`` (the table's name, quoted for the warehouse): per
        window (and dimension value), the statistics every run counted, added up.

        A run's panes count as its final one when they accumulate, all of them when they
        discard. Plain SQL that DuckDB and BigQuery both run.
        """
        group = ", ".join(k for k in self.key if k not in ("run_id", "pane_index"))
        return (
            f"SELECT {group},\n"
            "  SUM(total_transactions) AS total_transactions,\n"
            "  SUM(total_amount_sum) AS total_amount_sum,\n"
            "  MIN(min_amount) AS min_amount,\n"
            "  MAX(max_amount) AS max_amount,\n"
            "  COUNT(DISTINCT run_id) AS runs,\n"
            "  MAX(pane_index) AS last_pane_index,\n"
            "  MAX(processed_at) AS last_processed_at\n"
            f"FROM ({self.stored_panes_sql(source)})\n"
            "WHERE accumulation = 'discarding' OR pane_index = last_pane\n"
            f"GROUP BY {group}"
        )

    def jsonl_source(self, pattern: str) -> str:
        """DuckDB's reader of this table's JSON Lines files (the JSONL sink's), typed as the
        warehouse's columns: ``totals_sql(jsonl_source('out/windows-*.jsonl'))`` is the totals
        view over files."""
        columns = ", ".join(f"'{c.name}': '{c.duckdb_type}'" for c in self.columns)
        quoted = pattern.replace("'", "''")
        return f"read_json('{quoted}', format = 'newline_delimited', columns = {{{columns}}})"

    def to_json_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """JSON-safe values: RFC 3339 UTC timestamps, money as exact decimal strings."""
        out: dict[str, Any] = {}
        for name, kind in self._kinds:
            value = row.get(name)
            if value is None or kind is None:
                out[name] = value
            elif kind is Kind.TIMESTAMP:
                out[name] = _timestamp_text(value) if isinstance(value, datetime) else value
            else:
                out[name] = money.to_text(value if type(value) is Decimal else Decimal(value))
        return out

    @functools.cached_property
    def _kinds(self) -> tuple[tuple[str, Kind | None], ...]:
        """Each column's name, and its kind where a JSON row converts it."""
        return tuple((c.name, c.kind if c.kind in (Kind.TIMESTAMP, Kind.MONEY) else None)
                     for c in self.columns)

    def to_jsonl(self, row: dict[str, Any]) -> str:
        return orjson.dumps(self.to_json_row(row)).decode()

    def to_storage_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The Python types Beam's Storage Write API transform encodes: Decimal money at the
        NUMERIC scale, Beam Timestamps."""
        from apache_beam.utils.timestamp import Timestamp

        out: dict[str, Any] = {}
        for c in self.columns:
            value = row.get(c.name)
            if value is not None and c.kind is Kind.TIMESTAMP:
                value = Timestamp.from_utc_datetime(value.astimezone(UTC))
            elif value is not None and c.kind is Kind.MONEY:
                value = Decimal(value).quantize(Decimal(1).scaleb(-money.SCALE),
                                                context=money.CONTEXT)
            out[c.name] = value
        return out

    def arrow_schema(self):
        import pyarrow as pa

        types = {
            Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
            Kind.INTEGER: pa.int64(),
            Kind.MONEY: pa.decimal128(38, money.SCALE),
            Kind.STRING: pa.string(),
            Kind.FLOAT: pa.float64(),
        }
        return pa.schema(
            [pa.field(c.name, types[c.kind], nullable=not c.required) for c in self.columns]
        )

    def to_arrow(self, rows: list[dict[str, Any]]):
        import pyarrow as pa

        schema = self.arrow_schema()
        columns = {}
        for c in self.columns:
            values = [r.get(c.name) for r in rows]
            if c.kind is Kind.MONEY:
                # money's 38-digit context: the default (28) fails on sums of 10^19 and more
                values = [None if v is None else Decimal(v).quantize(
                    Decimal(1).scaleb(-money.SCALE), context=money.CONTEXT) for v in values]
            columns[c.name] = values
        return pa.Table.from_pydict(columns, schema=schema)


def _timestamp_text(moment: datetime) -> str:
    """Milliseconds like publishers write them, or microseconds when those are not zero:
    a session window starts at an event time, and BigQuery and DuckDB keep microseconds."""
    return format_timestamp(moment, "microseconds" if moment.microsecond % 1000 else
                            "milliseconds")


_PANE = (
    Column("pane_timing", Kind.STRING, True, "EARLY, ON_TIME or LATE: when this pane fired"),
    Column("pane_index", Kind.INTEGER, True, "0 for a window's first pane, then 1, 2, ..."),
    Column("processed_at", Kind.TIMESTAMP, True, "when the pipeline emitted this pane (UTC)"),
)
_STATS = (
    Column("total_transactions", Kind.INTEGER, True, "valid, unique transactions in the window"),
    Column("total_amount_sum", Kind.MONEY, True, "exact sum of their amounts"),
    Column("avg_transaction_amount", Kind.MONEY, False, "sum / count, rounded half-even to 9 places"),
    Column("max_amount", Kind.MONEY, False, "largest amount"),
    Column("min_amount", Kind.MONEY, False, "smallest amount"),
)
_RUN = (
    Column("run_id", Kind.STRING, True, "the run that counted these panes: derived from the input "
           "for a replay (a rerun is the same run), drawn once per streaming job"),
    Column("accumulation", Kind.STRING, True, "accumulating (the run's last pane is its window "
           "total) or discarding (its panes add up)"),
)
_WINDOW = (
    Column("window_start_time", Kind.TIMESTAMP, True, "event-time window start (inclusive, UTC)"),
    Column("window_end_time", Kind.TIMESTAMP, True, "event-time window end (exclusive, UTC)"),
)

#: One row per window pane of a run. With accumulating panes a run's highest pane_index is its
#: total for the window; the totals view adds the runs up.
WINDOW_STATS = Table(
    columns=_WINDOW + _STATS + _PANE + _RUN,
    key=("run_id", "window_start_time", "window_end_time", "pane_index"),
    partition_column="window_start_time",
    clustering=("window_start_time",),
    totals_view="window_totals",
)

def dimension_table_name(table: str) -> str:
    """The per-dimension table beside a window table (``run --breakdown``), in every warehouse."""
    return f"{table}_by_dimension"


#: The optional second output: the same statistics per value of one dimension (e.g. category).
DIMENSION_STATS = Table(
    columns=_WINDOW + (
        Column("dimension", Kind.STRING, True, "the message field broken down, e.g. category"),
        Column("dimension_value", Kind.STRING, True, "its value ('' when the field was absent)"),
    ) + _STATS + _PANE + _RUN,
    key=("run_id", "window_start_time", "window_end_time", "dimension", "dimension_value",
         "pane_index"),
    partition_column="window_start_time",
    clustering=("dimension", "dimension_value"),
    totals_view="window_totals_by_dimension",
)

#: The reason of a dead letter that is not a message but an output row BigQuery refused (its
#: payload is the row as JSON). The message contract's reasons are txpipe.contract.Reason.
BIGQUERY_REJECTED = "bigquery_rejected"
DEAD_LETTER_REASONS = (*(r.value for r in Reason), BIGQUERY_REJECTED)

#: One row per rejected message (or refused output row) and run; a rerun or a retried write
#: of the same dead letter has the same dead_letter_id.
DEAD_LETTERS = Table(
    columns=(
        Column("reason", Kind.STRING, True, ", ".join(DEAD_LETTER_REASONS[:-1])
               + f" (the message contract) or {BIGQUERY_REJECTED} (a row BigQuery refused)"),
        Column("message", Kind.STRING, True, "what is wrong, in words (BigQuery's error text "
               f"for {BIGQUERY_REJECTED})"),
        Column("payload", Kind.STRING, True, "the raw message text, truncated to 64 KiB (the "
               f"refused row as JSON for {BIGQUERY_REJECTED})"),
        Column("seen_at", Kind.TIMESTAMP, True, "when the pipeline rejected it (UTC)"),
        Column("run_id", Kind.STRING, True, "the run that rejected it (as in the window table)"),
        Column("dead_letter_id", Kind.STRING, True, "hash of run, reason, payload and the "
               "how-many-th such payload of the run this is: the same in a rerun or a retry"),
    ),
    key=("dead_letter_id",),
    partition_column="seen_at",
    clustering=("reason",),
)

#: One row per anomaly found (txpipe.anomaly) and run: a window's metric, for the whole stream
#: or one value of the breakdown, scored at or above the detector's threshold. Like dead
#: letters, a rerun or a retried write of the same anomaly has the same anomaly_id.
ANOMALIES = Table(
    columns=_WINDOW + (
        Column("dimension", Kind.STRING, False, "the field broken down; null for the whole stream"),
        Column("dimension_value", Kind.STRING, False, "its value; null for the whole stream"),
        Column("metric", Kind.STRING, True, "the window-table column scored: total_transactions "
                                            "or total_amount_sum"),
        Column("value", Kind.MONEY, True, "the metric's value in the window (exact)"),
        Column("score", Kind.FLOAT, True, "the detector's outlier score"),
        Column("threshold", Kind.FLOAT, True, "the score from which a window is an anomaly"),
        Column("detector", Kind.STRING, True, "which Beam detector scored it, e.g. IQR"),
        Column("label", Kind.STRING, True, "outlier"),
        Column("processed_at", Kind.TIMESTAMP, True, "when the pipeline found it (UTC)"),
        Column("run_id", Kind.STRING, True, "the run that found it (as in the window table)"),
        Column("anomaly_id", Kind.STRING, True, "hash of run, window, series, metric and "
               "detector: the same in a rerun or a retry"),
    ),
    key=("anomaly_id",),
    partition_column="window_start_time",
    clustering=("metric", "dimension"),
)

#: The view beside the anomaly table (BigQuery for Looker Studio; the same SQL runs on DuckDB).
ANOMALY_VIEW = "windows_with_anomalies"


def windows_with_anomalies_sql(windows: str, anomalies: str) -> str:
    """Each run's windows, final pane (its highest pane_index), with the anomalies that run
    found in them: how many, the highest score and which series / metrics — one row per run
    and window, ready for a time-series chart. ``windows`` and ``anomalies`` are quoted table references
    (`` `project.dataset.table` `` in BigQuery, ``"table"`` in DuckDB)."""
    return f"""SELECT
  w.run_id, w.window_start_time, w.window_end_time, w.total_transactions, w.total_amount_sum,
  w.avg_transaction_amount, w.min_amount, w.max_amount, w.pane_timing, w.pane_index,
  COALESCE(a.anomalies, 0) AS anomalies, a.max_score, a.anomaly_series
FROM ({WINDOW_STATS.stored_panes_sql(windows)}) AS w
LEFT JOIN (
  SELECT run_id, window_start_time, window_end_time, COUNT(*) AS anomalies,
    MAX(score) AS max_score,
    STRING_AGG(COALESCE(dimension || '=' || dimension_value, 'all') || ' ' || metric, ', '
               ORDER BY score DESC) AS anomaly_series
  FROM {anomalies}
  GROUP BY run_id, window_start_time, window_end_time
) AS a
ON a.run_id = w.run_id AND a.window_start_time = w.window_start_time AND a.window_end_time = w.window_end_time
WHERE w.pane_index = w.last_pane"""


#: The view of dead letters per minute and reason (BigQuery for Looker Studio; DuckDB too).
DEAD_LETTER_VIEW = "dead_letters_per_minute"
#: A timestamp cut to its minute: the one spelling the two warehouses do not share.
MINUTE_OF = {"bigquery": "TIMESTAMP_TRUNC({}, MINUTE)", "duckdb": "date_trunc('minute', {})"}


def dead_letters_per_minute_sql(dead_letters: str, dialect: str) -> str:
    """Each run's dead letters counted per minute (of ``seen_at``) and reason — a stacked time
    series without reading the payloads. ``dead_letters`` is a quoted table reference,
    ``dialect`` a key of :data:`MINUTE_OF`."""
    minute = MINUTE_OF[dialect].format("seen_at")
    return f"""SELECT run_id, {minute} AS seen_minute, reason, COUNT(*) AS dead_letters
FROM {dead_letters}
GROUP BY run_id, seen_minute, reason"""


@dataclass(frozen=True)
class TableNames:
    """What a warehouse calls its tables: the settings' table ids, the same in a DuckDB file
    and a BigQuery dataset (the per-dimension table's name follows the window table's)."""

    windows: str = "hourly_sales_aggregation"
    dead_letters: str = "dead_letters"
    anomalies: str = "anomalies"

    @classmethod
    def from_settings(cls, settings) -> TableNames:
        return cls(settings.bigquery_table_id, settings.bigquery_dead_letter_table_id,
                   settings.bigquery_anomaly_table_id)

    @property
    def dimensions(self) -> str:
        return dimension_table_name(self.windows)

    def tables(self, dimensions: bool = False, anomalies: bool = False) -> list[tuple[Table, str]]:
        """The tables with their names: windows and dead letters always, the per-dimension
        table when a run breaks down, the anomaly table when it detects."""
        return [(WINDOW_STATS, self.windows), (DEAD_LETTERS, self.dead_letters)] + (
            [(DIMENSION_STATS, self.dimensions)] if dimensions else []) + (
            [(ANOMALIES, self.anomalies)] if anomalies else [])

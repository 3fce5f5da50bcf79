"""BigQuery, the production warehouse, through Beam's own ``WriteToBigQuery``.

Three methods (``--bigquery-method``; docs/dataflow.md section 5 says when to use which):

- ``file_loads``, the default for a replay: rows are staged as JSON files under the job's
  temp location and loaded by one BigQuery load job per table (free, atomic per job);
- ``streaming_inserts``, the default for a stream: ``tabledata.insertAll``, rows queryable
  in seconds; Beam gives each row an insert id and checkpoints it before the call, so a
  retried bundle sends the same ids and BigQuery's best-effort dedupe keeps one row;
- ``storage_write``: the Storage Write API in exactly-once mode (committed streams with
  offsets, every 5 s). Beam's Python SDK runs it as a cross-language transform: building the
  pipeline starts Beam's Java expansion service, so it needs Java and the service's jar
  (downloaded from Maven Central once) — ``run`` and ``export-job`` refuse it in one line
  where that is not available (:func:`storage_write_unavailable`). Its CREATE_IF_NEEDED makes a
  table without partitioning, so ``run``'s check (like ``setup``) creates the tables first.

Rows carry their run and key (txpipe.schema); whatever a method stores twice (a load retried
by hand, a rerun of a replay, a duplicate beyond insert-id dedupe) the ``window_totals`` view
reads once. Rows BigQuery refuses (``FAILED_ROWS_WITH_ERRORS`` of the streaming methods)
become dead letters with reason ``bigquery_rejected``; a dead letter the dead-letter table
refuses is logged at ERROR and counted (``dead_letters_unwritten``). A file load with a
refused row fails its load job, and the run with it: loud, not lost.

Nothing here knows about emulators: the lab points Beam's clients at one
(txpipe/lab/local_bigquery.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlparse

import apache_beam as beam
import orjson
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions
from apache_beam.transforms import window

from txpipe import metrics
from txpipe.config import BigQueryMethod
from txpipe.contract import MAX_PAYLOAD_CHARS
from txpipe.schema import (
    ANOMALIES,
    BIGQUERY_REJECTED,
    DEAD_LETTERS,
    DIMENSION_STATS,
    WINDOW_STATS,
    Table,
    dimension_table_name,
)
from txpipe.sinks.identity import RunIdentity

log = logging.getLogger("txpipe.sinks.bigquery")

#: A streaming job with file loads starts a load job per table this often (BigQuery allows
#: 1,500 loads per table a day: 288 at this rate).
FILE_LOADS_EVERY_SECONDS = 300
#: The Storage Write API commits its exactly-once streams this often (Beam's default).
STORAGE_WRITE_EVERY_SECONDS = 5
STREAMING_INSERT_BATCH = 500

_BEAM_METHOD = {
    BigQueryMethod.FILE_LOADS: WriteToBigQuery.Method.FILE_LOADS,
    BigQueryMethod.STREAMING_INSERTS: WriteToBigQuery.Method.STREAMING_INSERTS,
    BigQueryMethod.STORAGE_WRITE: WriteToBigQuery.Method.STORAGE_WRITE_API,
}


def resolve_method(method: BigQueryMethod | None, streaming: bool) -> BigQueryMethod:
    """The method asked for, else file loads for a replay and streaming inserts for a stream."""
    if method is not None:
        return method
    return BigQueryMethod.STREAMING_INSERTS if streaming else BigQueryMethod.FILE_LOADS


@dataclass(frozen=True)
class BigQuerySink:
    """Tables as ``PROJECT:DATASET.TABLE``; see :meth:`from_settings`."""

    table: str
    dead_letter_table: str
    dimension_table: str | None = None
    method: BigQueryMethod | None = None
    anomaly_table: str | None = None

    @classmethod
    def from_settings(cls, settings) -> BigQuerySink:
        return cls(table=settings.bigquery_table,
                   dead_letter_table=settings.bigquery_dead_letter_table,
                   method=settings.bigquery_method,
                   anomaly_table=settings.bigquery_anomaly_table)

    def check_method(self, streaming: bool) -> None:
        """Refuse (ValueError, one line) a method this machine cannot run, before building."""
        if resolve_method(self.method, streaming) is BigQueryMethod.STORAGE_WRITE:
            reason = storage_write_unavailable()
            if reason:
                raise ValueError(f"--bigquery-method storage_write: {reason}; use "
                                 "streaming_inserts or file_loads")

    def check(self, settings, streaming: bool, temp_location: str | None,
              dimensions: bool = False, anomalies: bool = False) -> str | None:
        """Before any data is read: credentials, the dataset, the tables and views (created
        where missing; txpipe.resources). Returns the temp location the run stages file loads
        under — BigQuery reads it, so gs:// for Google Cloud; for a local BigQuery a local
        directory, made here if none is given. Raises ValueError with one line."""
        from txpipe.resources import ResourceError, check_bigquery

        try:
            check_bigquery(settings, dimension_table=dimensions, anomaly_table=anomalies)
        except ResourceError as exc:
            raise ValueError(str(exc)) from None
        if resolve_method(self.method, streaming) is not BigQueryMethod.FILE_LOADS:
            return temp_location
        if os.environ.get("BIGQUERY_EMULATOR_HOST"):
            return temp_location or tempfile.mkdtemp(prefix="txpipe-loads-")
        if not (temp_location or "").startswith("gs://"):
            raise ValueError("--bigquery-method file_loads stages rows for BigQuery to load: "
                             "give --temp_location gs://BUCKET/tmp (or choose "
                             "streaming_inserts)")
        return temp_location

    def windows(self, run: RunIdentity) -> beam.PTransform:
        return WriteTable(self.table, WINDOW_STATS, self.method, run.stamp)

    def dimension_stats(self, run: RunIdentity) -> beam.PTransform:
        return WriteTable(self.dimension_table or dimension_table_name(self.table),
                          DIMENSION_STATS, self.method, run.stamp)

    def dead_letters(self, run: RunIdentity) -> beam.PTransform:
        return WriteTable(self.dead_letter_table, DEAD_LETTERS, self.method)

    def anomalies(self, run: RunIdentity) -> beam.PTransform:
        return WriteTable(self.anomaly_table or self.table.rsplit(".", 1)[0] + ".anomalies",
                          ANOMALIES, self.method, run.stamp_anomaly)


class WriteTable(beam.PTransform):
    """Rows -> one BigQuery table through WriteToBigQuery; returns the rows it refused, as
    dead letters (None for file loads, which fail instead)."""

    def __init__(self, table_spec: str, table: Table, method: BigQueryMethod | None,
                 stamp=None):
        super().__init__()
        self.table_spec, self.table, self.method, self.stamp = table_spec, table, method, stamp

    def expand(self, rows):
        options = rows.pipeline.options
        streaming = bool(options and options.view_as(StandardOptions).streaming)
        method = resolve_method(self.method, streaming)
        if self.stamp is not None:
            rows = rows | "Identify" >> beam.Map(self.stamp)
        encode = (self.table.to_storage_row if method is BigQueryMethod.STORAGE_WRITE
                  else self.table.to_json_row)
        written = rows | "Encode" >> beam.Map(encode) | "WriteToBigQuery" >> WriteToBigQuery(
            table=self.table_spec,
            schema=self.table.bigquery_schema(),
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            method=_BEAM_METHOD[method],
            additional_bq_parameters=self.table.bigquery_table_options(),
            **_method_options(method, streaming, options),
        )
        if method is BigQueryMethod.FILE_LOADS:
            return None
        refused = written.failed_rows_with_errors
        if self.table == DEAD_LETTERS:
            refused | "Unwritten" >> beam.ParDo(LogUnwrittenFn(self.table_spec))
            return None
        return (refused
                | "RejectedRows" >> beam.ParDo(RejectedRowFn(self.table_spec))
                # beside the parse dead letters, which live in the global window
                | "ToGlobalWindow" >> beam.WindowInto(window.GlobalWindows()))


def _method_options(method: BigQueryMethod, streaming: bool, options) -> dict:
    if method is BigQueryMethod.STREAMING_INSERTS:
        return {"batch_size": STREAMING_INSERT_BATCH,
                # permanent errors (a refused row) go to FAILED_ROWS_WITH_ERRORS, not retried
                "insert_retry_strategy": RetryStrategy.RETRY_ON_TRANSIENT_ERROR}
    if method is BigQueryMethod.STORAGE_WRITE:
        return {"use_at_least_once": False,
                "triggering_frequency": STORAGE_WRITE_EVERY_SECONDS if streaming else None}
    temp = options.view_as(GoogleCloudOptions).temp_location if options else None
    # Beam insists on a gs:// staging location; a local one serves a local BigQuery, and
    # `run` checks the location before anything starts (txpipe.cli).
    return {"triggering_frequency": FILE_LOADS_EVERY_SECONDS if streaming else None,
            "validate": not temp or temp.startswith("gs://")}


def rejected_row(table_spec: str, failure) -> dict:
    """A dead letter (schema.DEAD_LETTERS, before identification) for a row BigQuery refused:
    ``(destination, row, errors)`` from streaming inserts, ``{"failed_row", "error_message"}``
    from the Storage Write API."""
    if isinstance(failure, dict):
        row, errors = failure.get("failed_row"), failure.get("error_message")
    else:
        _, row, errors = failure
    if isinstance(errors, list):
        text = "; ".join(e.get("message") or e.get("reason") or str(e) if isinstance(e, dict)
                         else str(e) for e in errors)
    else:
        text = str(errors)
    payload = orjson.dumps(row, default=_json_value, option=orjson.OPT_SORT_KEYS).decode()
    return {
        "reason": BIGQUERY_REJECTED,
        "message": f"{table_spec} refused the row: {' '.join(text.split())}"[:MAX_PAYLOAD_CHARS],
        "payload": payload[:MAX_PAYLOAD_CHARS],
        "seen_at": datetime.now(UTC),
    }


def _json_value(value) -> str:
    """Storage Write rows hold Decimals and Beam Timestamps: as BigQuery's JSON has them."""
    return value.to_rfc3339() if hasattr(value, "to_rfc3339") else str(value)


class RejectedRowFn(beam.DoFn):
    """Refused rows -> dead letters, counted (``bigquery_rejected``)."""

    def __init__(self, table_spec: str):
        self.table_spec = table_spec
        self._rejected = Metrics.counter(metrics.NAMESPACE, metrics.BIGQUERY_REJECTED)

    def process(self, failure):
        self._rejected.inc()
        yield rejected_row(self.table_spec, failure)


class LogUnwrittenFn(beam.DoFn):
    """Dead letters the dead-letter table refused: nowhere left to write them but the log."""

    def __init__(self, table_spec: str):
        self.table_spec = table_spec
        self._unwritten = Metrics.counter(metrics.NAMESPACE, metrics.DEAD_LETTERS_UNWRITTEN)

    def process(self, failure):
        self._unwritten.inc()
        lost = rejected_row(self.table_spec, failure)
        log.error("dead letter not written: %s; the dead letter was: %s", lost["message"],
                  lost["payload"])


# --- the Storage Write API needs Beam's Java expansion service ----------------------------

EXPANSION_SERVICE = "sdks:java:io:google-cloud-platform:expansion-service:build"


def storage_write_unavailable(timeout: float = 3.0) -> str | None:
    """Why the Storage Write API cannot be used from this machine now, or None.

    Building the pipeline runs Beam's expansion service for it: ``java`` on the PATH and the
    service's jar, cached by Beam or downloadable from Maven Central."""
    from apache_beam.utils.subprocess_server import JavaJarServer

    if shutil.which("java") is None:
        return "it needs Java (Beam's expansion service) and there is no `java` on the PATH"
    url = JavaJarServer.path_to_beam_jar(EXPANSION_SERVICE)
    cached = os.path.join(JavaJarServer.JAR_CACHE, os.path.basename(url))
    if os.path.exists(url) or os.path.exists(cached):
        return None
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return (f"it needs Beam's expansion service jar ({os.path.basename(url)}), which is "
                f"not cached in {JavaJarServer.JAR_CACHE} and {host} cannot be reached "
                "(offline?)")
    return None


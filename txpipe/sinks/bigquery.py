"""BigQuery, the production warehouse, through Beam's streaming-insert writer.

Window rows carry insert ids derived from window and pane, so when a bundle is retried
BigQuery's best-effort insert-id dedupe sees the same id and keeps one row. The ids also carry
a run id drawn when the pipeline is built: a job started after a drain numbers its panes from
0 again, and its rows must not be taken for retries of the old job's. (Beam's own
WriteToBigQuery draws random ids per bundle; those protect against its own retries only.)
Dead letters have no natural id: each gets a random one, checkpointed by a shuffle before the
insert, as WriteToBigQuery does.

Both go through :class:`StreamingInsertFn`, Beam's writer made to follow
``BIGQUERY_EMULATOR_HOST`` so the sink can be tested offline (tests/test_bigquery_sink.py).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, replace

import apache_beam as beam
from apache_beam.io.gcp import bigquery_tools
from apache_beam.io.gcp.bigquery import BigQueryDisposition, BigQueryWriteFn
from apache_beam.io.gcp.bigquery_tools import RetryStrategy

from txpipe.contract import format_timestamp
from txpipe.schema import (
    ANOMALIES,
    DEAD_LETTERS,
    DIMENSION_STATS,
    WINDOW_STATS,
    Table,
    dimension_table_name,
)


def insert_id(row: dict, table: Table, run_id: str = "") -> str:
    """Stable id of a pane: the run and the table key's values, hashed (BigQuery allows 128)."""
    parts = [run_id]
    for name in table.key:
        value = row[name]
        parts.append(format_timestamp(value) if hasattr(value, "tzinfo") else str(value))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class WritePanesToBigQuery(beam.PTransform):
    """Rows -> streaming inserts with deterministic insert ids."""

    def __init__(self, table_spec: str, table: Table, batch_size: int = 500,
                 run_id: str | None = None):
        super().__init__()
        self.table_spec, self.table, self.batch_size = table_spec, table, batch_size
        self.run_id = run_id or uuid.uuid4().hex

    def expand(self, rows):
        table, spec, run_id = self.table, self.table_spec, self.run_id
        return (
            rows
            | "WithInsertIds" >> beam.Map(
                lambda row: (spec, (table.to_json_row(row), insert_id(row, table, run_id))))
            | "StreamingInsert" >> streaming_insert(table, self.batch_size)
        )


@dataclass(frozen=True)
class BigQuerySink:
    """Tables as ``PROJECT:DATASET.TABLE``; see :meth:`from_settings`."""

    table: str
    dead_letter_table: str
    dimension_table: str | None = None
    anomaly_table: str | None = None

    @classmethod
    def from_settings(cls, settings) -> BigQuerySink:
        return cls(
            table=settings.bigquery_table,
            dead_letter_table=settings.bigquery_dead_letter_table,
            anomaly_table=settings.bigquery_anomaly_table,
        )

    def windows(self) -> beam.PTransform:
        return WritePanesToBigQuery(self.table, WINDOW_STATS)

    def dimension_stats(self) -> beam.PTransform:
        return WritePanesToBigQuery(self.dimension_table or dimension_table_name(self.table),
                                    DIMENSION_STATS)

    def dead_letters(self) -> beam.PTransform:
        return _WriteDeadLetters(self.dead_letter_table)

    def anomalies(self) -> beam.PTransform:
        # Anomalies are events, appended like dead letters; but each has a natural identity
        # (window, series, metric, detector), which makes its insert id.
        identity = replace(ANOMALIES, key=("window_start_time", "window_end_time", "dimension",
                                           "dimension_value", "metric", "detector"))
        return WritePanesToBigQuery(
            self.anomaly_table or self.table.rsplit(".", 1)[0] + ".anomalies", identity)


class _WriteDeadLetters(beam.PTransform):
    def __init__(self, table_spec: str):
        super().__init__()
        self.table_spec = table_spec

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToJson" >> beam.Map(
                lambda row, spec=self.table_spec: (
                    spec, (DEAD_LETTERS.to_json_row(row), uuid.uuid4().hex)))
            # A shuffle checkpoints the random ids (as WriteToBigQuery does), so a retried
            # insert sends the same ids again instead of new ones BigQuery cannot dedupe.
            | "CommitInsertIds" >> beam.Reshuffle()
            | "StreamingInsert" >> streaming_insert(DEAD_LETTERS)
        )


def streaming_insert(table: Table, batch_size: int = 500) -> beam.ParDo:
    """``(table_spec, (json_row, insert_id))`` -> rows inserted, creating the table (schema,
    partitioning, clustering from ``table``) if needed; transient errors are retried."""
    return beam.ParDo(StreamingInsertFn(
        batch_size=batch_size,
        schema=table.bigquery_schema(),
        create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
        write_disposition=BigQueryDisposition.WRITE_APPEND,
        retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
        additional_bq_parameters=table.bigquery_table_options(),
    )).with_outputs(BigQueryWriteFn.FAILED_ROWS, BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS,
                    main="main")


class StreamingInsertFn(BigQueryWriteFn):
    """Beam's streaming-insert DoFn, pointed at ``BIGQUERY_EMULATOR_HOST`` when that is set.

    Beam's writer has no endpoint option: its apitools client (table get / create) always
    calls bigquery.googleapis.com and, finding no credentials, starts an interactive OAuth
    flow that never returns. Unset (Dataflow, real BigQuery), this is BigQueryWriteFn as is.
    """

    def start_bundle(self):
        endpoint = os.environ.get("BIGQUERY_EMULATOR_HOST")
        if self.bigquery_wrapper is None and endpoint:
            self.bigquery_wrapper = emulator_wrapper(endpoint)
        super().start_bundle()


def emulator_wrapper(endpoint: str) -> bigquery_tools.BigQueryWrapper:
    """Beam's BigQuery wrapper with both its clients on ``endpoint`` (``http://HOST:PORT``)."""
    from apache_beam.internal.http_client import get_new_http
    from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    api = bigquery_api.BigqueryV2(
        url=endpoint.rstrip("/") + "/bigquery/v2/", get_credentials=False,
        http=get_new_http(), response_encoding="utf8")
    wrapper = bigquery_tools.BigQueryWrapper(client=api)
    # insert_rows_json names the table's project; the client's own is only a default.
    wrapper.gcp_bq_client = bigquery.Client(
        project="emulator", credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint})
    return wrapper

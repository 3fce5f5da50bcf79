"""The embedded local warehouse: a DuckDB file, written in bulk through Arrow.

Window rows are upserted on (window, pane), so a retried bundle writes the same row again
instead of a second one. DuckDB lets one process write a file at a time: rows are funnelled
through one key and batched, and a writer that finds the file locked (a notebook reading it,
another replay worker) retries with backoff.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms import window

from txpipe.schema import (
    ANOMALIES,
    DEAD_LETTERS,
    DIMENSION_STATS,
    WINDOW_STATS,
    Table,
    dimension_table_name,
)

LOCK_RETRY_SECONDS = 120.0


def connect(path: str, read_only: bool = False, retry_seconds: float = LOCK_RETRY_SECONDS):
    """A DuckDB connection in UTC, waiting out another process's lock on the file."""
    import duckdb

    deadline = time.monotonic() + retry_seconds
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(path, read_only=read_only)
            con.execute("SET TimeZone='UTC'")
            return con
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def ensure_table(con, table: Table, name: str) -> None:
    con.execute(table.duckdb_ddl(name))


class _WriteBatchFn(beam.DoFn):
    def __init__(self, path: str, table: Table, name: str):
        self.path, self.table, self.name = path, table, name

    def setup(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        con = connect(self.path)
        try:
            ensure_table(con, self.table, self.name)
        finally:
            con.close()

    def process(self, keyed_batch):
        _, rows = keyed_batch
        rows = list(rows)
        if not rows:
            return
        batch = self.table.to_arrow(rows)  # noqa: F841 - read by DuckDB's replacement scan
        verb = "INSERT OR REPLACE" if self.table.key else "INSERT"
        con = connect(self.path)
        try:
            con.execute(f'{verb} INTO "{self.name}" SELECT * FROM batch')
        finally:
            con.close()
        yield len(rows)


class WriteDuckDB(beam.PTransform):
    def __init__(self, path: str, table: Table, name: str, batch_size: int = 5000,
                 flush_seconds: float = 1.0):
        super().__init__()
        self.path, self.table, self.name = path, table, name
        self.batch_size, self.flush_seconds = batch_size, flush_seconds

    def expand(self, rows):
        return (
            rows
            | "OneGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "OneWriter" >> beam.WithKeys(self.name)
            | "Batch" >> beam.GroupIntoBatches(
                self.batch_size, max_buffering_duration_secs=self.flush_seconds)
            | "Insert" >> beam.ParDo(_WriteBatchFn(self.path, self.table, self.name))
        )


@dataclass(frozen=True)
class DuckDBSink:
    path: str
    table: str = "hourly_sales_aggregation"
    dead_letter_table: str = "dead_letters"
    anomaly_table: str = "anomalies"

    @property
    def dimension_table(self) -> str:
        return dimension_table_name(self.table)

    def windows(self) -> beam.PTransform:
        return WriteDuckDB(self.path, WINDOW_STATS, self.table)

    def dimension_stats(self) -> beam.PTransform:
        return WriteDuckDB(self.path, DIMENSION_STATS, self.dimension_table)

    def dead_letters(self) -> beam.PTransform:
        return WriteDuckDB(self.path, DEAD_LETTERS, self.dead_letter_table)

    def anomalies(self) -> beam.PTransform:
        return WriteDuckDB(self.path, ANOMALIES, self.anomaly_table)

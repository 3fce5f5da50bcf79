"""The embedded local warehouse: a DuckDB file, written in bulk through Arrow.

Rows are inserted with ``INSERT OR IGNORE`` on their key (txpipe.schema): the run, the window
and the pane for statistics, the dead-letter id for dead letters. A retried batch, a rerun of
the same replay or a run resumed after a kill -9 finds its keys stored and changes nothing; a
restarted stream writes under a run id of its own and never touches an earlier run's rows.
The whole schema — tables and the ``window_totals`` views — is created at once, by ``run``'s
check before any data is read or else by the first writer to find its table missing, so no
run leaves dead letters without a window table.

DuckDB lets one process write a file at a time: rows are funnelled through one key and
batched, and a writer that finds the file locked (a notebook reading it) retries with backoff.
A bounded input is batched with a GroupByKey (no timer, so the DirectRunner keeps its fast
batch executor); a stream with GroupIntoBatches, flushed every second.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from txpipe import schema
from txpipe.schema import Table, TableNames
from txpipe.sinks.identity import RunIdentity
from txpipe.windowing import in_global_window

# duckdb (0.12 s to import) is imported where a file is opened: the lab's local read loads this
# module for its count of uncommitted rows, whatever the sink.

#: How long a writer retries a file another process holds, once the run has started.
LOCK_RETRY_SECONDS = 120.0
#: Writers of one process (the DirectRunner's threads) create the schema one at a time: DuckDB
#: refuses concurrent catalog changes with a write-write conflict.
_SCHEMA_LOCK = threading.Lock()


class _Uncommitted:
    """Rows handed to this process's warehouse writers and not yet committed, per file. The lab's
    local read acknowledges a message only once nothing is (``uncommitted(path) == 0``) and its
    windows have fired; nothing else reads it."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, path: str, n: int) -> None:
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + n


_UNCOMMITTED = _Uncommitted()


def _handed(row, path: str):
    _UNCOMMITTED.add(path, 1)
    return row


def uncommitted(path: str) -> int:
    """How many rows this process's writers of ``path`` were handed and have not committed."""
    return _UNCOMMITTED.counts.get(path, 0)


def forget_uncommitted(path: str) -> None:
    """A new run on ``path``: rows an earlier, cancelled run left in flight are not its own."""
    _UNCOMMITTED.counts.pop(path, None)


#: Called with (table name, rows) right after a batch is committed, in the writer's thread:
#: the lab's local read acknowledges an on-time window's messages there (same process only).
COMMIT_LISTENERS: list[Callable[[str, list], None]] = []


class WarehouseError(Exception):
    """The warehouse file cannot be used; the message is one line."""


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
            if not is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def lock_holder(exc: Exception) -> str:
    """"PID 1234" from DuckDB's conflicting-lock message, or "another process"."""
    found = re.search(r"\(PID (\d+)\)", str(exc))
    return f"process {found.group(1)}" if found else "another process"


@dataclass(frozen=True)
class DuckDBSink:
    path: str
    names: TableNames = TableNames()

    @classmethod
    def from_settings(cls, path: str, settings) -> DuckDBSink:
        """The sink of ``path`` under the settings' table names."""
        return cls(path, TableNames.from_settings(settings))

    def windows(self, run: RunIdentity) -> beam.PTransform:
        return WriteDuckDB(self, schema.WINDOW_STATS, self.names.windows, run.stamp)

    def dimension_stats(self, run: RunIdentity) -> beam.PTransform:
        return WriteDuckDB(self, schema.DIMENSION_STATS, self.names.dimensions, run.stamp)

    def dead_letters(self, run: RunIdentity) -> beam.PTransform:
        return WriteDuckDB(self, schema.DEAD_LETTERS, self.names.dead_letters)

    def anomalies(self, run: RunIdentity) -> beam.PTransform:
        return WriteDuckDB(self, schema.ANOMALIES, self.names.anomalies, run.stamp_anomaly)

    def ensure_schema(self, con, dimensions: bool = False, anomalies: bool = False) -> None:
        """Create what is missing (tables, views); refuse a table of another layout."""
        with _SCHEMA_LOCK:
            self._ensure_schema(con, dimensions, anomalies)

    def _ensure_schema(self, con, dimensions: bool, anomalies: bool) -> None:
        for table, name in self.names.tables(dimensions, anomalies):
            con.execute(table.duckdb_ddl(name))
            have = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position", [name]).fetchall()]
            if have != list(table.names):
                missing = [c for c in table.names if c not in have]
                raise WarehouseError(
                    f"table {name!r} in {self.path} has another layout (missing: "
                    f"{', '.join(missing) or 'none'}; written by an older txpipe?): move the "
                    "file aside or write to another --output")
            if table.totals_view:
                con.execute(f'CREATE OR REPLACE VIEW "{table.totals_view}" AS\n'
                            + table.totals_sql(f'"{name}"'))
        con.execute(f'CREATE OR REPLACE VIEW "{schema.DEAD_LETTER_VIEW}" AS\n'
                    + schema.dead_letters_per_minute_sql(f'"{self.names.dead_letters}"', "duckdb"))
        if anomalies:
            con.execute(f'CREATE OR REPLACE VIEW "{schema.ANOMALY_VIEW}" AS\n'
                        + schema.windows_with_anomalies_sql(f'"{self.names.windows}"',
                                                            f'"{self.names.anomalies}"'))

    def check(self, dimensions: bool = False, anomalies: bool = False, wait_seconds: float = 20.0,
              progress: Callable[[str], None] | None = None) -> None:
        """Open the file as the writer will (before any data is read): it must be a DuckDB
        database, not held by another process beyond ``wait_seconds``, and of this layout.
        Creates the schema. Raises WarehouseError with one line."""
        import duckdb

        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        deadline = time.monotonic() + wait_seconds
        said = False
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:
                if not is_lock_error(exc):
                    raise WarehouseError(
                        f"{self.path} is not a DuckDB database "
                        f"({' '.join(str(exc).split())[:160]})") from None
                if time.monotonic() >= deadline:
                    raise WarehouseError(
                        f"{self.path} is locked by {lock_holder(exc)} (waited "
                        f"{wait_seconds:g} s): close the other connection or write to another "
                        "--output") from None
                if not said and progress is not None:
                    progress(f"{self.path} is locked by {lock_holder(exc)}; waiting up to "
                             f"{wait_seconds:g} s for it")
                    said = True
                time.sleep(0.25)
        try:
            con.execute("SET TimeZone='UTC'")
            self.ensure_schema(con, dimensions, anomalies)
        except duckdb.Error as exc:
            raise WarehouseError(f"{self.path}: {' '.join(str(exc).split())[:200]}") from None
        finally:
            con.close()


class _WriteBatchFn(beam.DoFn):
    """Inserts batches; creates the schema the first time a table is found missing (the
    streaming DirectRunner sets a DoFn up again for every bundle, so not in ``setup``)."""

    def __init__(self, sink: DuckDBSink, table: Table, name: str):
        self.sink, self.table, self.name = sink, table, name

    def setup(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.sink.path)), exist_ok=True)

    def process(self, keyed_rows):
        import duckdb

        _, items = keyed_rows
        written = 0
        for batch, rows in self._batches(items):
            insert = f'INSERT OR IGNORE INTO "{self.name}" SELECT * FROM batch'
            con = connect(self.sink.path)  # a connection per batch: readers get a turn
            try:
                try:
                    con.execute(insert)
                except (duckdb.CatalogException, duckdb.BinderException):
                    # no such table yet, or one of another layout (refused in one line)
                    self.sink.ensure_schema(con, dimensions=self.table == schema.DIMENSION_STATS,
                                            anomalies=self.table == schema.ANOMALIES)
                    con.execute(insert)
            finally:
                con.close()
            _UNCOMMITTED.add(self.sink.path, -batch.num_rows)
            written += batch.num_rows
            for listener in list(COMMIT_LISTENERS):
                listener(self.name, rows if rows is not None else batch.to_pylist())
        yield written

    def _batches(self, items):
        """Arrow tables to insert, with their rows when at hand: a stream's rows, BATCH_SIZE at
        a time; a replay's packed tables (:class:`_PackRowsFn`) joined up to REPLAY_BATCH_ROWS
        (each insert opens the file, and closing it writes a checkpoint: 40 of them took 7 s
        for 200,000 dead letters, one took 1 s)."""
        import pyarrow as pa

        rows: list = []
        packed: list = []
        for item in items:
            if isinstance(item, bytes):
                packed.append(pa.ipc.open_stream(item).read_all())
                if sum(t.num_rows for t in packed) >= WriteDuckDB.REPLAY_BATCH_ROWS:
                    yield pa.concat_tables(packed), None
                    packed = []
                continue
            rows.append(item)
            if len(rows) == WriteDuckDB.BATCH_SIZE:
                yield self.table.to_arrow(rows), rows
                rows = []
        if rows:
            yield self.table.to_arrow(rows), rows
        if packed:
            yield pa.concat_tables(packed), None


class _PackRowsFn(beam.DoFn):
    """A bundle's rows -> Arrow IPC streams of up to BATCH_SIZE rows, in the global window (a
    bounded input): the grouping before the one writer then moves a table per batch instead of
    a row dict (pickled for its datetimes and Decimals) per row."""

    def __init__(self, sink: DuckDBSink, table: Table):
        self.sink, self.table = sink, table

    def start_bundle(self):
        self._rows: list = []

    def process(self, row):
        self._rows.append(row)
        if len(self._rows) >= WriteDuckDB.BATCH_SIZE:
            yield self._packed()

    def finish_bundle(self):
        if self._rows:
            yield self._packed()

    def _packed(self) -> WindowedValue:
        import pyarrow as pa

        rows, self._rows = self._rows, []
        _UNCOMMITTED.add(self.sink.path, len(rows))
        out = pa.BufferOutputStream()
        table = self.table.to_arrow(rows)
        with pa.ipc.new_stream(out, table.schema,
                               options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
            writer.write_table(table)
        return in_global_window(out.getvalue().to_pybytes())


class WriteDuckDB(beam.PTransform):
    """Rows -> one table of the warehouse; returns nothing (DuckDB refuses no row it is given
    that BigQuery would accept: a refused batch fails the run instead)."""

    BATCH_SIZE = 5000
    #: Rows a replay inserts per connection: about half a second, then a reader gets a turn.
    REPLAY_BATCH_ROWS = 100_000
    FLUSH_SECONDS = 1.0

    def __init__(self, sink: DuckDBSink, table: Table, name: str,
                 stamp: Callable[[dict], dict] | None = None):
        super().__init__()
        self.sink, self.table, self.name, self.stamp = sink, table, name, stamp

    def expand(self, rows):
        if self.stamp is not None:
            rows = rows | "Identify" >> beam.Map(self.stamp)
        if rows.is_bounded:
            batches = (rows
                       | "Pack" >> beam.ParDo(_PackRowsFn(self.sink, self.table))
                       | "OneWriter" >> beam.WithKeys(self.name)
                       | "Batch" >> beam.GroupByKey())
        else:
            batches = (rows
                       | "Handed" >> beam.Map(_handed, self.sink.path)
                       | "OneGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
                       | "OneWriter" >> beam.WithKeys(self.name)
                       | "Batch" >> beam.GroupIntoBatches(
                           self.BATCH_SIZE, max_buffering_duration_secs=self.FLUSH_SECONDS))
        batches | "Insert" >> beam.ParDo(_WriteBatchFn(self.sink, self.table, self.name))
        return None

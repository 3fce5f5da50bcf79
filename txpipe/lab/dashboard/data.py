"""What the dashboard shows, read from a DuckDB warehouse in one brief look.

DuckDB lets one process write a file, and a reader holding it makes that writer wait — and
the streaming DirectRunner's one worker thread with it, while the sink backs off. So a look
never opens the warehouse itself: it copies the file's bytes aside (no lock taken), attaches
the copy read-only to an in-memory database, keeps the latest run's rows and only then
totals, joins and converts (docs/dashboard.md, as measured).

A warehouse may hold several runs: the page shows the latest (the one that wrote last).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from txpipe.schema import WINDOW_STATS, TableNames

#: How many of the run's latest windows the page shows.
WINDOWS_SHOWN = 40
#: How many of the latest anomalies.
ANOMALIES_SHOWN = 20
#: How many times a look copies the file when a copy was torn by the writer's checkpoint.
COPY_ATTEMPTS = 3
PANE_TIMINGS = ("EARLY", "ON_TIME", "LATE")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    transactions: int
    amount_sum: Decimal
    min_amount: Decimal | None
    max_amount: Decimal | None
    panes: tuple[str, ...]  # each pane's timing, in pane_index order
    last_processed_at: datetime

    def pane_count(self, timing: str) -> int:
        return self.panes.count(timing)


@dataclass(frozen=True)
class Snapshot:
    """One look at the warehouse: the latest run's windows, dead letters and anomalies."""

    taken_at: float  # epoch seconds
    run_id: str | None = None
    windows: tuple[Window, ...] = ()  # oldest first, the latest WINDOWS_SHOWN
    windows_total: int = 0  # windows the run wrote (all of them)
    transactions_total: int = 0  # transactions in all of them
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    anomalies: tuple[dict[str, Any], ...] = ()  # newest first
    anomalies_total: int = 0
    note: str = ""  # why it is empty, when it is

    @property
    def dead_letters_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def newest_window_end(self) -> datetime | None:
        return max((w.end for w in self.windows), default=None)


def signature(path: str | Path) -> tuple | None:
    """What changes whenever the warehouse is written (its file's and log's size and time);
    None when it does not exist."""
    stats = []
    for name in (str(path), f"{path}.wal"):
        try:
            found = os.stat(name)
        except FileNotFoundError:
            if name == str(path):
                return None
            continue
        stats.append((found.st_size, found.st_mtime_ns))
    return tuple(stats)


def look(path: str | Path, tables: TableNames = TableNames(), windows_shown: int = WINDOWS_SHOWN,
         ) -> Snapshot:
    """Read a :class:`Snapshot` of ``path``; an empty one (with a note) before the pipeline
    has written or while the file cannot be read."""
    import duckdb

    now = time.time()
    if not Path(path).exists():
        return Snapshot(now, note=f"waiting for {path}: nothing written yet")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone='UTC'")
        with tempfile.TemporaryDirectory(prefix="txpipe-dashboard-") as aside:
            run_id, have = copy_latest_run(con, Path(path), Path(aside), tables)
        if run_id is None:
            return Snapshot(now, note="no rows yet")
        return _look(con, tables, run_id, have, windows_shown, now)
    except duckdb.Error as exc:
        return Snapshot(now, note=f"cannot read {path}: {' '.join(str(exc).split())[:160]}")
    finally:
        con.close()


def copy_latest_run(con, path: Path, aside: Path, tables: TableNames,
                    attempts: int = COPY_ATTEMPTS) -> tuple[str | None, set[str]]:
    """Copy the latest run's rows of ``path`` into the in-memory ``con``: from a copy of the
    file's bytes (and its write-ahead log) made in ``aside`` without taking DuckDB's lock. A
    copy torn by a checkpoint fails DuckDB's block checksums, and is made again. Returns the
    run and the tables copied."""
    import duckdb

    for attempt in range(attempts):
        snapshot = aside / f"snapshot-{attempt}.duckdb"
        shutil.copyfile(path, snapshot)
        wal = Path(f"{path}.wal")
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(wal, f"{snapshot}.wal")
        quoted = str(snapshot).replace("'", "''")
        try:
            con.execute(f"ATTACH '{quoted}' AS warehouse (READ_ONLY)")
            return _copy_rows(con, tables)
        except duckdb.Error:
            with contextlib.suppress(duckdb.Error):
                con.execute("DETACH DATABASE IF EXISTS warehouse")
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _copy_rows(con, tables: TableNames) -> tuple[str | None, set[str]]:
    try:
        have = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'warehouse'"
        ).fetchall()} & {tables.windows, tables.dead_letters, tables.anomalies}
        run_id = latest_run(con, tables, have)
        if run_id is not None:
            for name in have:
                columns = "reason, run_id, seen_at" if name == tables.dead_letters else "*"
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT {columns} FROM '
                            f'warehouse."{name}" WHERE run_id = ?', [run_id])
        return run_id, have
    finally:
        con.execute("DETACH warehouse")


def _look(con, tables: TableNames, run_id: str, have: set[str], windows_shown: int,
          now: float) -> Snapshot:
    windows, windows_total, transactions_total = (), 0, 0
    if tables.windows in have:
        windows, windows_total, transactions_total = _windows(con, tables.windows,
                                                              windows_shown)
    dead = {}
    if tables.dead_letters in have:
        dead = dict(con.execute(f'SELECT reason, COUNT(*) FROM "{tables.dead_letters}" '
                                "GROUP BY reason ORDER BY reason").fetchall())
    anomalies, anomalies_total = (), 0
    if tables.anomalies in have:
        anomalies, anomalies_total = _anomalies(con, tables.anomalies)
    return Snapshot(now, run_id, windows, windows_total, transactions_total, dead, anomalies,
                    anomalies_total)


def latest_run(con, tables: TableNames, have: set[str]) -> str | None:
    """The run that wrote last, to the window or the dead-letter table (of the attached
    warehouse)."""
    parts = []
    if tables.windows in have:
        parts.append(f'SELECT run_id, processed_at AS moment FROM warehouse."{tables.windows}"')
    if tables.dead_letters in have:
        parts.append(f'SELECT run_id, seen_at AS moment FROM warehouse."{tables.dead_letters}"')
    if not parts:
        return None
    found = con.execute(f"SELECT run_id FROM ({' UNION ALL '.join(parts)}) "
                        "ORDER BY moment DESC LIMIT 1").fetchone()
    return None if found is None else found[0]


def _windows(con, table: str, shown: int) -> tuple[tuple[Window, ...], int, int]:
    """The run's latest windows, each totalled by the warehouse's own totals SQL (its panes
    read once, the last one when they accumulate), with the timing of every pane."""
    source = f'"{table}"'
    totals = WINDOW_STATS.totals_sql(source)
    windows_total, transactions_total = con.execute(
        f"SELECT COUNT(*), COALESCE(SUM(total_transactions), 0) FROM ({totals})").fetchone()
    rows = con.execute(f"""
        WITH t AS ({totals}),
        latest AS (SELECT * FROM t ORDER BY window_start_time DESC, window_end_time DESC
                   LIMIT {int(shown)}),
        panes AS (
            SELECT window_start_time, window_end_time,
                   STRING_AGG(pane_timing, ',' ORDER BY pane_index) AS timings
            FROM (SELECT DISTINCT window_start_time, window_end_time, pane_index, pane_timing
                  FROM {source})
            GROUP BY window_start_time, window_end_time)
        SELECT l.window_start_time, l.window_end_time, l.total_transactions,
               l.total_amount_sum, l.min_amount, l.max_amount, p.timings, l.last_processed_at
        FROM latest l JOIN panes p USING (window_start_time, window_end_time)
        ORDER BY l.window_start_time, l.window_end_time""").fetchall()
    windows = tuple(Window(start, end, int(count), total, low, high,
                           tuple(timings.split(",")), processed)
                    for start, end, count, total, low, high, timings, processed in rows)
    return windows, int(windows_total), int(transactions_total)


def _anomalies(con, table: str) -> tuple[tuple[dict[str, Any], ...], int]:
    total = con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    cursor = con.execute(
        "SELECT window_start_time, COALESCE(dimension || '=' || dimension_value, 'all') AS "
        f'series, metric, value, score, threshold, detector FROM "{table}" '
        f"ORDER BY window_start_time DESC, score DESC LIMIT {ANOMALIES_SHOWN}")
    names = [d[0] for d in cursor.description]
    return tuple(dict(zip(names, r, strict=True)) for r in cursor.fetchall()), int(total)

"""The dashboard's data against real warehouses, recounted independently; the run's progress
record; the `dashboard` command's bad input (one line, exit 2)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest
from recount import BASE, Tx, bad_records, recount_fixed_windows, spell_message

from txpipe.config import Settings
from txpipe.lab import progress
from txpipe.lab.dashboard import app, data
from txpipe.lab.direct_pubsub import ReadSession
from txpipe.schema import WINDOW_STATS

pytestmark = pytest.mark.subprocess  # the warehouse is written by `python -m txpipe run`
VARIABLES = {name.upper() for name in Settings.model_fields}


def _replay(work, name: str, seed: int, n: int, minutes: int):
    """A foreign file (odd spellings, re-sends, unsorted, every kind of bad record) replayed
    by the CLI into work/w.duckdb. Returns (transactions, bad records)."""
    rng = random.Random(seed)
    txs = [Tx(f"{name}-{i}", Decimal(rng.randrange(1, 10**8)).scaleb(-rng.randrange(0, 5)),
              BASE + timedelta(microseconds=rng.randrange(0, minutes * 60_000_000)))
           for i in range(n)]
    lines = [spell_message(tx, rng) for tx in txs]
    lines += [spell_message(rng.choice(txs), rng) for _ in range(n // 10)]  # re-sends
    bad = bad_records()
    lines += [raw for raw, _ in bad]
    rng.shuffle(lines)
    path = work / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    done = subprocess.run(
        [sys.executable, "-m", "txpipe", "run", "--source", "file", "--input", str(path),
         "--sink", "duckdb", "--output", str(work / "w.duckdb")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return txs, bad


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    work = tmp_path_factory.mktemp("dashboard")
    first = _replay(work, "first", 1, 600, 5)
    second = _replay(work, "second", 2, 1500, 12)
    return work / "w.duckdb", first, second


@pytest.mark.subprocess
def test_the_page_shows_the_latest_run_as_recounted(warehouse):
    path, _, (txs, bad) = warehouse
    snap = data.look(path)
    expected = recount_fixed_windows(txs, 30).sort_index()
    assert snap.windows_total == len(expected) == 24
    assert snap.transactions_total == len(txs)
    assert [w.start for w in snap.windows] == list(expected.index)
    assert [w.transactions for w in snap.windows] == list(expected["total_transactions"])
    assert [w.amount_sum for w in snap.windows] == list(expected["total_amount_sum"])
    assert [w.min_amount for w in snap.windows] == list(expected["min_amount"])
    assert [w.max_amount for w in snap.windows] == list(expected["max_amount"])
    assert {w.panes for w in snap.windows} == {("ON_TIME",)}  # a replay fires once, on time
    assert snap.dead_letters == dict(Counter(reason for _, reason in bad))
    # the first run's rows are in the same file, and not shown
    con = duckdb.connect(str(path), read_only=True)
    try:
        runs = con.execute("SELECT COUNT(DISTINCT run_id) FROM hourly_sales_aggregation").fetchone()
    finally:
        con.close()
    assert runs == (2,) and snap.run_id.startswith("replay-")


@pytest.mark.subprocess
def test_the_page_shows_only_the_latest_windows(warehouse):
    path, _, (txs, _) = warehouse
    snap = data.look(path, windows_shown=5)
    expected = recount_fixed_windows(txs, 30).sort_index()
    assert [w.start for w in snap.windows] == list(expected.index[-5:])
    assert snap.windows_total == len(expected)
    assert len(app.windows_rows(snap)) == 5


def _panes_warehouse(path, accumulation: str, panes):
    """A warehouse of one run whose window fired ``panes`` (timing, [amounts in the pane]) —
    written through the warehouse's own DDL, as the sink creates it."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone='UTC'")
    con.execute(WINDOW_STATS.duckdb_ddl("hourly_sales_aggregation"))
    seen: list[Decimal] = []
    for index, (timing, amounts) in enumerate(panes):
        seen = seen + amounts if accumulation == "accumulating" else amounts
        con.execute(
            "INSERT INTO hourly_sales_aggregation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [BASE, BASE + timedelta(seconds=30), len(seen), sum(seen), sum(seen) / len(seen),
             max(seen), min(seen), timing, index, BASE + timedelta(seconds=40 + index),
             "stream-x", accumulation])
    con.close()


@pytest.mark.parametrize("accumulation", ["accumulating", "discarding"])
def test_a_windows_panes_and_its_total(tmp_path, accumulation):
    panes = [("EARLY", [Decimal("1.10"), Decimal("2.20")]), ("EARLY", [Decimal("0.05")]),
             ("ON_TIME", [Decimal("9.99")]), ("LATE", [Decimal("100.00"), Decimal("0.01")])]
    path = tmp_path / "w.duckdb"
    _panes_warehouse(path, accumulation, panes)
    (window,) = data.look(path).windows
    everything = [a for _, amounts in panes for a in amounts]
    assert window.panes == ("EARLY", "EARLY", "ON_TIME", "LATE")
    assert (window.pane_count("EARLY"), window.pane_count("ON_TIME"),
            window.pane_count("LATE")) == (2, 1, 1)
    assert window.transactions == len(everything)
    assert window.amount_sum == sum(everything)
    assert (window.min_amount, window.max_amount) == (min(everything), max(everything))


@pytest.mark.subprocess
def test_a_look_takes_no_lock_a_writer_would_wait_for(warehouse):
    """Another process holds the file open read-write, as the pipeline's sink does while it
    inserts: the look still reads it (from a copy), and the holder's connection is untouched."""
    path, _, (txs, _) = warehouse
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('holding', flush=True); sys.stdin.read(); "
         "print(c.execute('SELECT COUNT(*) FROM dead_letters').fetchone()[0])", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(duckdb.IOException, match="lock"):  # the file is held indeed
            duckdb.connect(str(path), read_only=True)
        snap = data.look(path)
        out, _ = holder.communicate("", timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert snap.transactions_total == len(txs) and snap.note == ""
    assert holder.returncode == 0 and int(out) > 0


def test_an_empty_or_missing_warehouse_says_so(tmp_path):
    assert "nothing written yet" in data.look(tmp_path / "none.duckdb").note
    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    snap = data.look(tmp_path / "empty.duckdb")
    assert snap.note == "no rows yet" and snap.windows == ()
    assert "waiting for" in app.status_line(data.look(tmp_path / "none.duckdb"), None)


def test_the_progress_record_of_a_local_read(tmp_path):
    session = ReadSession(band_seconds=10)
    state = session.state("projects/p/subscriptions/s")
    now = time.time_ns() // 1000
    events = [now - 30_000_000, now - 20_000_000, now - 25_000_000]
    state.record(events, ["a", "b", "c"], 0)
    state.watermark.pulled(events, now)
    warehouse = tmp_path / "w.duckdb"
    recorder = progress.follow(warehouse, session, published=lambda: 10)
    recorder.stop()
    record = progress.read(warehouse)
    assert progress.progress_path(warehouse) == tmp_path / "w.progress.json"
    assert record.pulled == 3 and record.published == 10 and record.backlog == 7
    assert record.watermark == session.watermark() / 1e6
    assert 0 < record.lag < 60 and not record.draining
    assert progress.read(tmp_path / "other.duckdb") is None


def _dashboard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "txpipe", "dashboard", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ["directory", "not_duckdb", "no_folder", "port_range",
                                  "no_warehouse", "port_busy"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 10)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    args = {
        "directory": ["--warehouse", str(tmp_path)],
        "not_duckdb": ["--warehouse", str(text)],
        "no_folder": ["--warehouse", str(tmp_path / "nope" / "w.duckdb")],
        "port_range": ["--warehouse", str(tmp_path / "w.duckdb"), "--port", "70000"],
        "no_warehouse": ["--port", "0"],
        "port_busy": ["--warehouse", str(tmp_path / "w.duckdb"), "--port",
                      str(busy.getsockname()[1])],
    }[case]
    try:
        done = _dashboard(*args)
    finally:
        busy.close()
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("txpipe dashboard: error: "), done.stderr

"""Runs, reruns and restarts into one warehouse, as an operator has them: the same replay
twice changes nothing; a replay in two overlapping halves and a restarted stream overwrite
nothing; ``window_totals`` adds the runs up — exact when they counted different transactions,
over by exactly the transactions two runs both counted when they did not (the documented
bound); a kill -9 midway leaves a usable warehouse that a rerun completes without doubles.

Expectations are recounts of the test's own transactions (tests/recount.py), never the
pipeline's output.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.utils.timestamp import Timestamp
from recount import AWKWARD_AMOUNTS, BASE, Tx, bad_records, recount_windows, spell_message

from txpipe.__main__ import main as txpipe_main
from txpipe.config import Settings, load_settings
from txpipe.pipeline import build_pipeline
from txpipe.schema import WINDOW_STATS
from txpipe.sinks import DuckDBSink, JsonlSink
from txpipe.sinks.duckdb import connect
from txpipe.sources import MessagesSource

VARIABLES = {name.upper() for name in Settings.model_fields}


def transactions(n: int, seconds: float, seed: int, prefix: str = "t") -> list[Tx]:
    rng = random.Random(seed)
    return [Tx(f"{prefix}{i}", Decimal(rng.choice(AWKWARD_AMOUNTS)),
               BASE + timedelta(microseconds=rng.randrange(int(seconds * 1e6))))
            for i in range(n)]


def read(path, sql: str) -> list[tuple]:
    con = connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def totals(path) -> dict:
    """window start -> (count, sum, min, max, runs) from the warehouse's totals view."""
    return {r[0]: r[1:] for r in read(path, "SELECT window_start_time, total_transactions, "
                                            "total_amount_sum, min_amount, max_amount, runs "
                                            "FROM window_totals")}


def recount(*parts: list[Tx]) -> dict:
    """window start -> (count, sum, min, max) of the parts' transactions, added up (a
    transaction in two parts counts twice, as two runs count it)."""
    out: dict = {}
    for part in parts:
        for start, row in recount_windows(part).iterrows():
            count, total, lo, hi = out.get(start.to_pydatetime(), (0, Decimal(0), None, None))
            out[start.to_pydatetime()] = (
                count + row.total_transactions, total + row.total_amount_sum,
                row.min_amount if lo is None else min(lo, row.min_amount),
                row.max_amount if hi is None else max(hi, row.max_amount))
    return out


def without_runs(view: dict) -> dict:
    return {start: values[:4] for start, values in view.items()}


def everything(path) -> dict[str, list[tuple]]:
    return {table: read(path, f"SELECT * FROM {table} ORDER BY ALL")
            for table in ("hourly_sales_aggregation", "dead_letters")}


def replay(raw: list[bytes], sink, settings: Settings | None = None) -> None:
    with beam.Pipeline(options=PipelineOptions([])) as pipeline:
        build_pipeline(pipeline, settings or load_settings(env_file=None),
                       MessagesSource(tuple(raw)), sink)


# --- replays --------------------------------------------------------------------------------


def test_the_same_replay_twice_changes_nothing(tmp_path, in_process):
    """Through the CLI, as an operator reruns a replay: every row of both tables, down to
    ``processed_at`` and ``seen_at``, is what the first run wrote."""
    rng = random.Random(5)
    txs = transactions(300, 120, seed=5)
    bad = bad_records()
    lines = [spell_message(tx, rng) for tx in txs] + [raw for raw, _ in bad] * 2
    rng.shuffle(lines)
    (tmp_path / "tx.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    argv = ["run", "--source", "file", "--input", "tx.jsonl", "--sink", "duckdb", "--output",
            "w.duckdb"]
    snapshots = []
    for _ in range(2):
        proc = in_process(txpipe_main, argv, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        # A caller that goes on gets its garbage collector back as it was (the run pauses
        # it through start-up and freezes start-up's objects).
        assert gc.isenabled() and gc.get_freeze_count() == 0
        snapshots.append(everything(tmp_path / "w.duckdb"))
    assert snapshots[0] == snapshots[1]
    assert len(snapshots[0]["dead_letters"]) == 2 * len(bad)  # each copy of a bad line
    assert without_runs(totals(tmp_path / "w.duckdb")) == recount(txs)


def test_a_replay_into_json_lines_writes_one_file_per_table_that_a_rerun_replaces(
        tmp_path, in_process):
    """Through the CLI: ``PREFIX-<run id>-00000-of-00001<suffix>`` per table, written aside and
    renamed into place; a rerun leaves the same files with the same rows (but when each row was
    made) and nothing else; a replay with no dead letter still writes its (empty) dead-letter file."""
    rng = random.Random(3)
    txs = transactions(120, 90, seed=3)
    bad = bad_records()
    clean = [spell_message(tx, rng) for tx in txs]
    (tmp_path / "tx.jsonl").write_bytes(b"\n".join(clean + [raw for raw, _ in bad]) + b"\n")
    (tmp_path / "clean.jsonl").write_bytes(b"\n".join(clean) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}

    def run(name: str) -> dict[str, list[dict]]:
        argv = ["run", "--source", "file", "--input", f"{name}.jsonl", "--sink", "jsonl",
                "--output", f"{name}/w"]
        proc = in_process(txpipe_main, argv, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        return {f: [json.loads(line) for line in (tmp_path / name / f).read_text().splitlines()]
                for f in sorted(os.listdir(tmp_path / name))}

    first, second = run("tx"), run("tx")
    assert list(first) == list(second)
    (windows,) = [f for f in first if "-dead-" not in f]
    (dead,) = [f for f in first if "-dead-" in f]
    rows, dead_rows = first[windows], first[dead]
    run_id = rows[0]["run_id"]
    assert windows == f"w-{run_id}-00000-of-00001.jsonl"
    assert dead == f"w-dead-letters-{run_id}-00000-of-00001.dead-letters.jsonl"
    assert sorted(r["reason"] for r in dead_rows) == sorted(reason for _, reason in bad)
    assert {r["window_start_time"]: (r["total_transactions"], Decimal(r["total_amount_sum"]))
            for r in rows} == {start.strftime("%Y-%m-%dT%H:%M:%S.000Z"):
                               (n, total) for start, (n, total, _, _) in recount(txs).items()}
    def but_when(table: list[dict]) -> list[str]:  # when a row was made is a run's own
        return sorted(json.dumps({k: v for k, v in r.items() if k not in ("processed_at",
                                                                           "seen_at")},
                                 sort_keys=True) for r in table)

    assert list(map(but_when, first.values())) == list(map(but_when, second.values()))

    empty = run("clean")
    assert [len(r) for f, r in empty.items() if "-dead-" in f] == [0]


def test_json_lines_parts_of_several_bundles_join_into_the_one_file(tmp_path):
    """Each bundle writes a part; the parts become the one file, in full, and are gone — and
    so are parts no bundle of this attempt wrote."""
    from txpipe.schema import Column, Kind, Table
    from txpipe.sinks.jsonl import _JoinPartsFn, _WritePartsFn

    path = str(tmp_path / "w-run-00000-of-00001.jsonl")
    table = Table((Column("id", Kind.STRING, True, "a row's id"),))
    writer, parts = _WritePartsFn(path, table), []
    for bundle in (["a", "b"], [], ["c"]):
        writer.start_bundle()
        for name in bundle:
            writer.process({"id": name})
        parts += [part.value for part in writer.finish_bundle()]
    assert len(parts) == 2  # an empty bundle writes no part
    # what a crashed attempt of the same run (or a retried bundle) left behind
    writer.start_bundle()
    writer.process({"id": "from a crashed attempt"})
    writer._file.close()
    _JoinPartsFn(path).process(None, parts)
    lines = (tmp_path / "w-run-00000-of-00001.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["a", "b", "c"]
    assert os.listdir(tmp_path) == ["w-run-00000-of-00001.jsonl"]


def test_a_replay_in_two_overlapping_halves_overwrites_nothing(tmp_path):
    """The second half re-sends a fifth of the first: two runs, each exact; the totals count
    the re-sent fifth twice — by exactly its own recount — in DuckDB and in JSON Lines."""
    rng = random.Random(9)
    txs = transactions(500, 240, seed=9)
    lines = [spell_message(tx, rng) for tx in txs]
    first, second = slice(0, 300), slice(200, 500)
    warehouse = tmp_path / "w.duckdb"
    duck = DuckDBSink(str(warehouse))
    jsonl = JsonlSink(str(tmp_path / "out" / "windows"), str(tmp_path / "out" / "dead"))

    replay(lines[first], duck)
    replay(lines[first], jsonl)
    before = everything(warehouse)
    replay(lines[second], duck)
    replay(lines[second], jsonl)

    after = everything(warehouse)
    assert set(before["hourly_sales_aggregation"]) <= set(after["hourly_sales_aggregation"])
    runs = read(warehouse, "SELECT DISTINCT run_id FROM hourly_sales_aggregation")
    assert len(runs) == 2
    expected = recount(txs[first], txs[second])
    assert expected == recount(txs, txs[200:300])  # every transaction, plus the overlap again
    view = totals(warehouse)
    assert without_runs(view) == expected
    overlap_windows = set(recount(txs[200:300]))
    assert {start for start, v in view.items() if v[4] == 2} >= overlap_windows

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    files = WINDOW_STATS.jsonl_source(str(tmp_path / "out" / "windows-*.jsonl"))
    from_files = con.execute("SELECT window_start_time, total_transactions, total_amount_sum, "
                             f"min_amount, max_amount FROM ({WINDOW_STATS.totals_sql(files)})"
                             ).fetchall()
    con.close()
    assert {r[0]: r[1:] for r in from_files} == expected
    files = sorted(os.listdir(tmp_path / "out"))
    assert [f.split("-")[0] for f in files] == ["dead", "dead", "windows", "windows"]
    assert {f.split("-", 1)[1].split("-0")[0] for f in files} == {r for (r,) in runs}


def test_a_replay_into_duckdb_keeps_the_direct_runners_batch_executor(tmp_path):
    """A bounded write batches with a GroupByKey, and dead letters are numbered by a grouping:
    no processing-time timer and no per-element state, which would send the DirectRunner to
    its slow bundle-based executor (GroupIntoBatches with a buffering time does)."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import RunnerResult

    rng = random.Random(3)
    raw = [spell_message(tx, rng) for tx in transactions(50, 60, seed=3)] + [b"{", b"{"]
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    build_pipeline(pipeline, load_settings(env_file=None), MessagesSource(tuple(raw)),
                   DuckDBSink(str(tmp_path / "w.duckdb")))
    result = pipeline.run()
    result.wait_until_finish()
    assert isinstance(result, RunnerResult)  # the FnApiRunner
    assert read(tmp_path / "w.duckdb", "SELECT count(*) FROM dead_letters") == [(2,)]


def test_a_replay_of_many_dead_letters_packs_them_and_loses_none(tmp_path, monkeypatch):
    """A replay's dead letters cross the shuffles packed (a bundle's per bucket; the DuckDB
    writer's rows as Arrow tables, joined for fewer inserts): with packs and inserts made tiny,
    every bad line and every copy of one is in DuckDB and in JSON Lines under its reason,
    numbered alike by both."""
    from txpipe.sinks import duckdb as duckdb_sink
    from txpipe.sinks import identity

    monkeypatch.setattr(identity._PackCopiesFn, "MAX_HELD", 7)
    monkeypatch.setattr(duckdb_sink.WriteDuckDB, "BATCH_SIZE", 11)
    monkeypatch.setattr(duckdb_sink.WriteDuckDB, "REPLAY_BATCH_ROWS", 30)
    rng = random.Random(8)
    bad = [(raw + b" " * i, reason) for i in range(4) for raw, reason in bad_records()
           if raw.strip()]  # distinct lines of every reason (a blank line stays one line)
    copies = rng.sample(bad, 25)
    lines = [spell_message(tx, rng) for tx in transactions(200, 60, seed=8)]
    lines += [raw for raw, _ in bad + copies]
    rng.shuffle(lines)
    warehouse = tmp_path / "w.duckdb"
    replay(lines, DuckDBSink(str(warehouse)))
    replay(lines, JsonlSink(str(tmp_path / "out" / "w"), str(tmp_path / "out" / "dead")))

    expected = sorted((reason, raw.decode("utf-8", "backslashreplace"))
                      for raw, reason in bad + copies)
    stored = read(warehouse, "SELECT reason, payload, dead_letter_id FROM dead_letters")
    assert sorted((reason, payload) for reason, payload, _ in stored) == expected
    assert len({i for _, _, i in stored}) == len(stored)
    [dead_file] = (tmp_path / "out").glob("dead-*.jsonl")
    written = [json.loads(line) for line in dead_file.read_text().splitlines()]
    assert sorted((r["reason"], r["payload"], r["dead_letter_id"]) for r in written) == sorted(
        stored)


# --- streams --------------------------------------------------------------------------------


class StreamSource:
    """Deliveries as a live read would see them: (seconds after BASE when delivered, raw),
    the watermark following delivery time (in 10 s steps), the event time taken from the
    message."""

    streaming = True
    dedupe_seconds = 0  # the read drops no redelivery itself

    def __init__(self, deliveries: list[tuple[float, bytes, Tx]]):
        self.deliveries = sorted(deliveries, key=lambda d: d[0])

    def estimated_bytes(self) -> None:
        return None

    def transform(self):
        stream = test_stream.TestStream()
        steps: dict[int, list] = {}
        for sent, raw, tx in self.deliveries:
            steps.setdefault(int(sent) // 10 * 10, []).append(beam.window.TimestampedValue(
                raw, Timestamp.from_utc_datetime(tx.event_time)))
        for second, elements in steps.items():  # one bundle per step, as a batched pull
            stream.advance_watermark_to(Timestamp.from_utc_datetime(
                BASE + timedelta(seconds=second)))
            stream.add_elements(elements)
        return stream.advance_watermark_to_infinity()


def stream_into(warehouse, deliveries) -> None:
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, load_settings(env_file=None), StreamSource(deliveries),
                   DuckDBSink(str(warehouse)))
    pipeline.run().wait_until_finish()


def test_a_restarted_stream_overwrites_nothing_and_its_totals_are_exact(tmp_path):
    """Run 1 counts 100 s of traffic (a late event gives window 10:00:30 a LATE pane) and is
    stopped; what it had pulled but not counted is redelivered to run 2, some of it twice,
    with the rest. Run 2 numbers its panes from 0 again, under its own run id."""
    rng = random.Random(13)
    txs = transactions(250, 150, seed=13)
    late = Tx("late", Decimal("42.42"), BASE + timedelta(seconds=45))
    deliveries = [((tx.event_time - BASE).total_seconds() + 0.5, spell_message(tx, rng), tx)
                  for tx in txs]
    counted = [d for d in deliveries if d[0] < 95] + [(75.0, spell_message(late, rng), late)]
    redelivered = [d for d in deliveries if 95 <= d[0] < 100]
    rest = [d for d in deliveries if d[0] >= 100]
    run2 = [(100 + i * 0.01, raw, tx) for i, (_, raw, tx) in enumerate(redelivered)]
    run2 += rest + [(d[0] + 1, d[1], d[2]) for d in rest[:10]]  # a second delivery in run 2
    warehouse = tmp_path / "w.duckdb"

    stream_into(warehouse, counted)
    before = everything(warehouse)["hourly_sales_aggregation"]
    assert max(row[8] for row in before) == 1  # the LATE pane: pane_index 1
    stream_into(warehouse, run2)
    after = everything(warehouse)["hourly_sales_aggregation"]

    assert set(before) <= set(after)  # nothing of run 1 overwritten
    straddling = BASE + timedelta(seconds=90)
    panes = read(warehouse, "SELECT run_id, pane_index FROM hourly_sales_aggregation "
                            f"WHERE window_start_time = '{straddling.isoformat()}'")
    assert sorted(p for _, p in panes) == [0, 0] and len({r for r, _ in panes}) == 2
    assert without_runs(totals(warehouse)) == recount(txs + [late])  # exact across runs


def test_a_restart_within_the_dedupe_horizon_is_over_by_exactly_what_both_counted(tmp_path):
    """The bound in docs/dataflow.md: a new job's Dedupe starts empty, so a transaction it
    receives again after the old job counted it (a publisher retry across the restart) is
    counted by both — the totals exceed the truth by exactly those transactions."""
    rng = random.Random(17)
    txs = transactions(150, 90, seed=17)
    deliveries = [((tx.event_time - BASE).total_seconds() + 0.5, spell_message(tx, rng), tx)
                  for tx in txs]
    run1 = [d for d in deliveries if d[0] < 60]
    again = run1[-8:]  # counted by run 1, delivered once more to run 2
    run2 = [(60 + i * 0.01, raw, tx) for i, (_, raw, tx) in enumerate(again)]
    run2 += [d for d in deliveries if d[0] >= 60]
    warehouse = tmp_path / "w.duckdb"
    stream_into(warehouse, run1)
    stream_into(warehouse, run2)
    assert without_runs(totals(warehouse)) == recount(txs, [tx for _, _, tx in again])


# --- kill -9 --------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_kill_9_midway_then_a_rerun_is_usable_exact_and_without_doubles(tmp_path):
    """The run is killed as soon as its writers commit for the first time (the warehouse file
    changes after ``run``'s check created the schema; the writers commit 5,000 rows at a
    time), before it has written everything; the warehouse opens, holds every table, and a
    rerun of the same replay completes it: each window and each dead letter once."""
    rng = random.Random(21)
    txs = transactions(20_000, 600, seed=21)
    bad = [(b'{"transaction_id": "b%d", "amount": "1", "timestamp": "x"}' % i, "invalid_type")
           for i in range(30_000)]
    lines = [spell_message(tx, rng) for tx in txs] + [raw for raw, _ in bad]
    rng.shuffle(lines)
    (tmp_path / "tx.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    argv = [sys.executable, "-m", "txpipe", "run", "--source", "file", "--input", "tx.jsonl",
            "--sink", "duckdb", "--output", "w.duckdb"]
    warehouse = tmp_path / "w.duckdb"

    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the check is done (schema created) when the run starts
        if "starting:" in line:
            break
    def state() -> tuple:  # the file and its write-ahead log, by stat alone (no lock taken)
        return tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None
                     for p in (warehouse, tmp_path / "w.duckdb.wal"))

    before = state()
    deadline = time.monotonic() + 240
    while state() == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished

    tables = {r[0] for r in read(warehouse, "SELECT table_name FROM duckdb_tables()")}
    assert tables == {"hourly_sales_aggregation", "dead_letters"}  # usable, whole schema
    dead_then, windows_then = read(
        warehouse, "SELECT (SELECT count(*) FROM dead_letters), "
                   "(SELECT count(*) FROM hourly_sales_aggregation)")[0]
    windows = len(recount(txs))
    assert dead_then < len(bad) or windows_then < windows  # midway

    rerun = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert read(warehouse, "SELECT count(*), count(DISTINCT dead_letter_id) FROM dead_letters"
                ) == [(len(bad), len(bad))]
    assert read(warehouse, "SELECT count(*) = count(DISTINCT window_start_time) "
                           "FROM hourly_sales_aggregation") == [(True,)]
    assert without_runs(totals(warehouse)) == recount(txs)

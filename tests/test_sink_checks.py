"""``run`` opens its sink before reading any data: an output that is no DuckDB database, a
warehouse another process keeps locked, a BigQuery dataset that is missing, unreachable or of
another layout end in one line on stderr and exit status 2, quickly — as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import unique_settings

from txpipe.config import Settings

pytestmark = pytest.mark.subprocess  # commands run as a user runs them

LINE = b'{"transaction_id": "a", "amount": 1.5, "timestamp": "2026-11-27T10:00:00Z"}\n'
VARIABLES = {name.upper() for name in Settings.model_fields}


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k.upper() not in VARIABLES and not k.startswith(("BIGQUERY_", "PUBSUB_"))}
    return {**clean, **extra}


def txpipe_run(args: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "txpipe", "run", *args], cwd=cwd,
                            env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def duckdb_args(output: str) -> list[str]:
    return ["--source", "file", "--input", "in.jsonl", "--sink", "duckdb", "--output", output]


HOLD = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)  # a reader, e.g. a notebook
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Every case in a directory of its own, all started at once."""
    work = {}
    for name in ("text", "old", "locked", "released", "no-credentials"):
        work[name] = tmp_path_factory.mktemp(name)
        (work[name] / "in.jsonl").write_bytes(LINE)
    (work["text"] / "w.duckdb").write_text("not a database\n")
    con = duckdb.connect(str(work["old"] / "w.duckdb"))  # the layout before run ids
    con.execute("CREATE TABLE hourly_sales_aggregation (window_start_time TIMESTAMPTZ, "
                "window_end_time TIMESTAMPTZ, pane_index BIGINT)")
    con.close()
    for name in ("locked", "released"):
        duckdb.connect(str(work[name] / "w.duckdb")).close()
    holders = {"locked": hold(work["locked"] / "w.duckdb", 120),
               "released": hold(work["released"] / "w.duckdb", 120)}
    no_adc = {"GOOGLE_APPLICATION_CREDENTIALS": str(work["no-credentials"] / "none.json"),
              "CLOUDSDK_CONFIG": str(work["no-credentials"])}
    started = time.monotonic()
    procs = {
        "text": txpipe_run(duckdb_args("w.duckdb"), work["text"]),
        "old": txpipe_run(duckdb_args("w.duckdb"), work["old"]),
        "locked": txpipe_run(duckdb_args("w.duckdb"), work["locked"],
                             WAREHOUSE_LOCK_WAIT_SECONDS="3"),
        "released": txpipe_run(duckdb_args("w.duckdb"), work["released"]),
        # the default command: stream from Pub/Sub into BigQuery
        "no-credentials": txpipe_run([], work["no-credentials"], **no_adc),
    }
    # the reader of "released" lets go once the run says it is waiting
    waiting = procs["released"].stderr.readline()
    holders["released"].kill()
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        if name == "released":
            err = waiting + err
        results[name] = (proc.returncode, out, err, time.monotonic() - started, work[name])
        if name == "locked":  # the run gave up while the reader still held the file
            results["reader_still_holding"] = holders["locked"].poll() is None
    for holder in holders.values():
        holder.kill()
        holder.wait()
    results["locked_pid"] = holders["locked"].pid
    return results


def one_line_error(result, says: str) -> str:
    code, out, err, _, _ = result
    assert code == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert lines[-1].startswith("txpipe run: error: ") and says in lines[-1], err
    return err


def test_a_text_file_as_the_warehouse_is_one_line(cases):
    err = one_line_error(cases["text"], "is not a DuckDB database")
    assert len(err.splitlines()) == 1
    assert (cases["text"][4] / "w.duckdb").read_text() == "not a database\n"  # left alone


def test_a_warehouse_of_another_layout_is_one_line(cases):
    err = one_line_error(cases["old"], "has another layout (missing: ")
    assert len(err.splitlines()) == 1 and "run_id" in err


def test_a_lock_held_by_a_reader_is_waited_for_a_stated_time_then_one_line(cases):
    err = one_line_error(cases["locked"], f"is locked by process {cases['locked_pid']} "
                                          "(waited 3 s)")
    progress, _ = err.splitlines()
    assert progress.startswith("txpipe run: ") and "waiting up to 3 s" in progress
    assert cases["reader_still_holding"]  # it gave up by itself, not because the reader let go


def test_a_lock_released_within_the_wait_lets_the_run_through(cases):
    code, out, err, _, work = cases["released"]
    assert code == 0, err
    assert "waiting up to 20 s" in err.splitlines()[0]
    assert "read=1 valid=1 unique=1" in out
    con = duckdb.connect(str(work / "w.duckdb"), read_only=True)
    assert con.execute("SELECT total_transactions FROM window_totals").fetchall() == [(1,)]
    con.close()


def test_the_default_run_without_credentials_is_one_line_and_quick(cases):
    err = one_line_error(cases["no-credentials"], "BigQuery: no Google Cloud credentials")
    assert len(err.splitlines()) == 1 and "BIGQUERY_EMULATOR_HOST" in err
    assert cases["no-credentials"][3] < 100  # not Beam's minutes of credential retries


def test_bigquery_checks_against_the_emulator(bigquery_emulator, tmp_path):
    """A missing dataset and a table of another layout are refused before anything runs; the
    check then creates what is missing (tables, the totals view) in a dataset that exists."""
    from google.cloud import bigquery

    from txpipe.resources import bigquery_client

    settings = unique_settings()
    (tmp_path / "in.jsonl").write_bytes(LINE)
    extra = {"PROJECT_ID": settings.project_id, "BIGQUERY_DATASET_ID":
             settings.bigquery_dataset_id, "BIGQUERY_EMULATOR_HOST": bigquery_emulator.endpoint}
    args = ["--source", "file", "--input", "in.jsonl", "--sink", "bigquery"]
    missing = txpipe_run(args, tmp_path, **extra)
    out, err = missing.communicate(timeout=120)
    one_line_error((missing.returncode, out, err, 0, tmp_path),
                   f"dataset {settings.project_id}:{settings.bigquery_dataset_id}")

    client = bigquery_client(settings.project_id)
    client.create_dataset(f"{settings.project_id}.{settings.bigquery_dataset_id}")
    client.create_table(bigquery.Table(
        f"{settings.project_id}.{settings.bigquery_dataset_id}.{settings.bigquery_table_id}",
        schema=[bigquery.SchemaField("window_start_time", "TIMESTAMP")]))
    drifted = txpipe_run(args, tmp_path, **extra)
    out, err = drifted.communicate(timeout=120)
    one_line_error((drifted.returncode, out, err, 0, tmp_path), "missing columns: ")
    tables = {t.table_id for t in client.list_tables(
        f"{settings.project_id}.{settings.bigquery_dataset_id}")}
    assert "window_totals" not in tables  # refused before creating anything after it

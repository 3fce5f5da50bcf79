"""The BigQuery sink — Beam's own WriteToBigQuery — against a real local BigQuery.

bqemulator serves BigQuery's REST API on a free port; pipelines run on the DirectRunner with
the lab's wiring of Beam's clients to it (txpipe.lab.local_bigquery) and no credentials at
all. What reaches BigQuery is read back with the official google-cloud-bigquery client and
compared with the DuckDB sink's rows for the same input, and with sums this test computes
from its own messages.

bqemulator answers a row it cannot store with HTTP 500 instead of BigQuery's per-row
``insertErrors``; the refused-row tests put :class:`RefusingClient` — BigQuery's per-row check
against the table's real schema, read from the emulator — in front of its ``insertAll``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import unique_settings
from google.cloud import bigquery

from txpipe import metrics
from txpipe.__main__ import main as txpipe_main
from txpipe.config import Settings
from txpipe.contract import encode_message
from txpipe.lab.local_bigquery import cloud_client, emulator_clients
from txpipe.metrics import read_counters
from txpipe.pipeline import build_pipeline
from txpipe.resources import bigquery_client, check_bigquery
from txpipe.schema import BIGQUERY_REJECTED, DEAD_LETTERS, WINDOW_STATS, Table
from txpipe.sinks import BigQuerySink, DuckDBSink
from txpipe.sinks.duckdb import connect
from txpipe.sources import MessagesSource

START = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
#: What a stored row is compared on: everything but when it was written.
VOLATILE = {"processed_at", "seen_at", "last_processed_at"}


def messages() -> tuple[list[bytes], dict[datetime, list[Decimal]]]:
    """Valid transactions over four 30 s windows, one duplicate and three bad messages (two
    of them identical: two dead letters)."""
    raw, expected = [], defaultdict(list)
    for i in range(40):
        moment = START + timedelta(seconds=3 * i + 0.5)
        amount = Decimal(f"{(i * 37) % 500 + 1}.{i % 100:02d}")
        data, _ = encode_message(f"tx-{i:03d}", amount, moment, category="books")
        raw.append(data)
        window = START + timedelta(seconds=30 * ((3 * i) // 30))
        expected[window].append(amount)
    raw.append(raw[7])  # a redelivery: must be counted once
    raw += [b"{not json", b"{not json"]
    raw.append(json.dumps({"transaction_id": "neg", "amount": -5,
                           "timestamp": "2026-11-27T10:00:01Z"}).encode())
    return raw, expected


def stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def query(client, sql: str) -> list[dict]:
    return [dict(row.items()) for row in client.query(sql).result()]


def bigquery_warehouse(client, settings: Settings, totals: bool = True) -> dict[str, list]:
    ds = f"`{settings.project_id}.{settings.bigquery_dataset_id}"
    return {
        "windows": query(client, f"SELECT * FROM {ds}.{settings.bigquery_table_id}` "
                                  "ORDER BY window_start_time, pane_index"),
        "dead": query(client, f"SELECT * FROM {ds}.{settings.bigquery_dead_letter_table_id}` "
                               "ORDER BY dead_letter_id"),
        "totals": query(client, f"SELECT * FROM {ds}.window_totals` ORDER BY window_start_time")
        if totals else None,
    }


def duckdb_warehouse(path: str, settings: Settings) -> dict[str, list[dict]]:
    con = connect(path, read_only=True)
    try:
        def rows(sql):
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        return {
            "windows": rows(f'SELECT * FROM "{settings.bigquery_table_id}" '
                            "ORDER BY window_start_time, pane_index"),
            "dead": rows(f'SELECT * FROM "{settings.bigquery_dead_letter_table_id}" '
                         "ORDER BY dead_letter_id"),
            "totals": rows("SELECT * FROM window_totals ORDER BY window_start_time"),
        }
    finally:
        con.close()


def run_pipeline(settings: Settings, raw, sink, temp_location=None, cloud=cloud_client):
    args = [f"--temp_location={temp_location}"] if temp_location else []
    with emulator_clients(cloud=cloud):
        pipeline = beam.Pipeline(options=PipelineOptions(args))
        build_pipeline(pipeline, settings, MessagesSource(tuple(raw)), sink)
        result = pipeline.run()
        result.wait_until_finish()
    return read_counters(result)


def new_dataset(settings: Settings):
    client = bigquery_client(settings.project_id)
    client.create_dataset(f"{settings.project_id}.{settings.bigquery_dataset_id}")
    return client


@pytest.mark.parametrize("method", ["file_loads", "streaming_inserts"])
def test_bigquery_holds_what_duckdb_holds_for_the_same_input(bigquery_emulator, tmp_path,
                                                             method):
    settings = unique_settings(window_size_seconds=30, bigquery_method=method)
    raw, expected = messages()
    client = new_dataset(settings)
    check_bigquery(settings)  # what `run` does first: tables and the totals view
    run_pipeline(settings, raw, BigQuerySink.from_settings(settings), tmp_path / "loads")
    warehouse = str(tmp_path / "warehouse.duckdb")
    run_pipeline(settings, raw, DuckDBSink.from_settings(warehouse, settings))

    got, want = bigquery_warehouse(client, settings), duckdb_warehouse(warehouse, settings)
    for part in ("windows", "dead", "totals"):
        assert [stable(r) for r in got[part]] == [stable(r) for r in want[part]], part
    # ... and what both hold is the test's own recount
    assert [(r["window_start_time"], r["total_transactions"], r["total_amount_sum"])
            for r in got["totals"]] == [(w, len(a), sum(a)) for w, a in sorted(expected.items())]
    assert sorted(d["reason"] for d in got["dead"]) == [
        "invalid_amount", "malformed_json", "malformed_json"]
    assert len({d["dead_letter_id"] for d in got["dead"]}) == 3

    loads = [job for job in client.list_jobs() if job.job_type == "load"
             and job.destination.dataset_id == settings.bigquery_dataset_id]
    assert len(loads) == (2 if method == "file_loads" else 0)  # windows, dead letters
    table = client.get_table(f"{settings.project_id}.{settings.bigquery_dataset_id}."
                             f"{settings.bigquery_table_id}")
    assert table.time_partitioning.field == "window_start_time"
    assert table.clustering_fields == ["window_start_time"]
    assert [f.name for f in table.schema] == list(WINDOW_STATS.names)


class RefusingClient:
    """Stand-in for BigQuery's per-row ``insertAll`` check, which bqemulator lacks: rows whose
    values the destination table's real schema (read from the emulator) cannot hold come
    back as ``insertErrors`` with reason ``invalid``; the others go on to the emulator."""

    def __init__(self, endpoint: str):
        self.client = cloud_client(endpoint)

    def insert_rows_json(self, table, json_rows, row_ids=None, **kwargs):
        schema = {f.name: f.field_type for f in self.client.get_table(table).schema}
        errors, keep, keep_ids = [], [], []
        for index, row in enumerate(json_rows):
            problem = next((f"Cannot convert value to {schema[name]}: {value!r}"
                            for name, value in row.items() if not _fits(schema.get(name), value)),
                           None)
            if problem:
                errors.append({"index": index, "errors": [
                    {"reason": "invalid", "location": "", "message": problem}]})
            else:
                keep.append(row)
                keep_ids.append(row_ids[index] if row_ids else None)
        if keep:
            assert self.client.insert_rows_json(table, keep, row_ids=keep_ids) == []
        return errors


def _fits(kind: str | None, value) -> bool:
    if kind is None or value is None:
        return kind is not None
    try:
        if kind in ("INTEGER", "INT64"):
            return int(str(value)) == Decimal(str(value))
        if kind == "NUMERIC":
            return Decimal(str(value)).is_finite()
        if kind == "TIMESTAMP":
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")) is not None
    except (ValueError, InvalidOperation):
        return False
    return True


def _disagreeing_table(client, settings: Settings, table_id: str, table: Table, column: str,
                       kind: str):
    """A table made by someone else: one column of another type than txpipe's schema."""
    schema = [bigquery.SchemaField(f["name"], kind if f["name"] == column else f["type"])
              for f in table.bigquery_schema()["fields"]]
    client.create_table(bigquery.Table(
        f"{settings.project_id}.{settings.bigquery_dataset_id}.{table_id}", schema=schema))


def test_rows_bigquery_refuses_become_counted_dead_letters(bigquery_emulator, tmp_path):
    """A pipeline built without ``run``'s check (which refuses that table: see
    test_sink_checks.py), writing into a table whose schema disagrees."""
    settings = unique_settings(bigquery_method="streaming_inserts")
    raw, expected = messages()
    client = new_dataset(settings)
    _disagreeing_table(client, settings, settings.bigquery_table_id, WINDOW_STATS, "pane_timing",
                       "INT64")
    counters = run_pipeline(settings, raw, BigQuerySink.from_settings(settings),
                            cloud=RefusingClient)

    got = bigquery_warehouse(client, settings, totals=False)
    assert got["windows"] == []  # every window row was refused ...
    refused = [d for d in got["dead"] if d["reason"] == BIGQUERY_REJECTED]
    assert counters[metrics.BIGQUERY_REJECTED] == len(refused) == len(expected)
    rows = sorted((json.loads(d["payload"]) for d in refused),
                  key=lambda r: r["window_start_time"])  # ... and is a dead letter, whole
    assert [(r["total_transactions"], Decimal(r["total_amount_sum"])) for r in rows] == [
        (len(a), sum(a)) for _, a in sorted(expected.items())]
    assert all("refused the row: Cannot convert value to INT64: 'ON_TIME'" in d["message"]
               for d in refused)
    assert sorted(d["reason"] for d in got["dead"] if d not in refused) == [
        "invalid_amount", "malformed_json", "malformed_json"]


def test_dead_letters_the_dead_letter_table_refuses_are_logged_and_counted(
        bigquery_emulator, caplog):
    settings = unique_settings(bigquery_method="streaming_inserts")
    raw, _ = messages()
    client = new_dataset(settings)
    _disagreeing_table(client, settings, settings.bigquery_dead_letter_table_id, DEAD_LETTERS,
                       "seen_at", "INT64")
    with caplog.at_level("ERROR", logger="txpipe.sinks.bigquery"):
        counters = run_pipeline(settings, raw, BigQuerySink.from_settings(settings),
                                cloud=RefusingClient)
    assert counters[metrics.DEAD_LETTERS_UNWRITTEN] == 3
    lost = [r.getMessage() for r in caplog.records if "dead letter not written" in r.getMessage()]
    assert len(lost) == 3 and sum("{not json" in line for line in lost) == 2
    assert len(bigquery_warehouse(client, settings, False)["windows"]) == 4  # windows went in


def test_a_replay_with_sink_bigquery_loads_files_and_a_rerun_changes_no_total(
        bigquery_emulator, tmp_path, in_process):
    """As a user runs it: ``run --sink bigquery`` on a file, twice. File loads append, so the
    table holds each pane twice after the rerun; the totals view reads each pane once."""
    settings = unique_settings()
    raw, expected = messages()
    client = new_dataset(settings)
    (tmp_path / "tx.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in
           {name.upper() for name in Settings.model_fields}}
    env.update(PROJECT_ID=settings.project_id, BIGQUERY_DATASET_ID=settings.bigquery_dataset_id,
               BIGQUERY_EMULATOR_HOST=bigquery_emulator.endpoint)
    argv = ["run", "--source", "file", "--input", "tx.jsonl", "--sink", "bigquery"]
    totals = []
    for _ in range(2):
        proc = in_process(txpipe_main, argv, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "read=44 valid=41 unique=40 duplicates_dropped=1 dead_lettered=3" in proc.stdout
        totals.append(bigquery_warehouse(client, settings))
    first, second = totals
    assert [stable(r) for r in first["totals"]] == [stable(r) for r in second["totals"]]
    assert [(r["total_transactions"], r["total_amount_sum"], r["runs"]) for r in
            second["totals"]] == [(len(a), sum(a), 1) for _, a in sorted(expected.items())]
    assert len(second["windows"]) == 2 * len(first["windows"]) == 8
    loads = [job for job in client.list_jobs() if job.job_type == "load"
             and job.destination.dataset_id == settings.bigquery_dataset_id]
    assert len(loads) == 4


def test_a_refused_row_from_either_streaming_method_makes_the_same_dead_letter():
    """Streaming inserts hand over ``(table, row, errors)``; the Storage Write API (which
    cannot run here) ``{"failed_row", "error_message"}`` with Python values: both become a
    dead letter whose payload is the row in BigQuery's JSON form."""
    from apache_beam.utils.timestamp import Timestamp

    from txpipe.sinks.bigquery import rejected_row

    stored = {"window_start_time": "2026-11-27T10:00:00Z", "total_amount_sum": "1.500000000",
              "pane_index": 0}
    inserts = rejected_row("p:d.t", ("p:d.t", stored, [
        {"reason": "invalid", "location": "pane_index", "message": "no such field"}]))
    storage = rejected_row("p:d.t", {"error_message": "no such field", "failed_row": {
        "window_start_time": Timestamp.from_rfc3339("2026-11-27T10:00:00Z"),
        "total_amount_sum": Decimal("1.500000000"), "pane_index": 0}})
    for dead in (inserts, storage):
        assert dead["reason"] == BIGQUERY_REJECTED
        assert dead["message"] == "p:d.t refused the row: no such field"
        assert json.loads(dead["payload"]) == stored

"""The output row, defined once: BigQuery schema, DuckDB DDL, Arrow schema and JSON rows all
derive from the same columns; the DuckDB sink is idempotent on window + pane; BigQuery
insert ids are stable across retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import duckdb
import pytest

from txpipe.schema import DEAD_LETTERS, DIMENSION_STATS, WINDOW_STATS, Kind
from txpipe.sinks.bigquery import insert_id
from txpipe.sinks.duckdb import DuckDBSink

TABLES = {"window_stats": WINDOW_STATS, "dimension_stats": DIMENSION_STATS,
          "dead_letters": DEAD_LETTERS}
BQ_TYPES = {Kind.TIMESTAMP: "TIMESTAMP", Kind.INTEGER: "INT64", Kind.MONEY: "NUMERIC",
            Kind.STRING: "STRING"}
DUCK_TYPES = {Kind.TIMESTAMP: "TIMESTAMP WITH TIME ZONE", Kind.INTEGER: "BIGINT",
              Kind.MONEY: "DECIMAL(38,9)", Kind.STRING: "VARCHAR"}


def test_the_window_row_has_the_issues_columns_in_order():
    assert WINDOW_STATS.names == (
        "window_start_time", "window_end_time", "total_transactions", "total_amount_sum",
        "avg_transaction_amount", "max_amount", "min_amount", "pane_timing", "pane_index",
        "processed_at")
    assert WINDOW_STATS.key == ("window_start_time", "window_end_time", "pane_index")


@pytest.mark.parametrize("name", list(TABLES))
def test_bigquery_schema_derives_from_the_columns(name):
    table = TABLES[name]
    fields = table.bigquery_schema()["fields"]
    assert [f["name"] for f in fields] == list(table.names)
    for field, column in zip(fields, table.columns, strict=True):
        assert field["type"] == BQ_TYPES[column.kind]
        assert field["mode"] == ("REQUIRED" if column.required else "NULLABLE")
        assert field["description"]
    options = table.bigquery_table_options()
    assert options["timePartitioning"] == {"type": "DAY", "field": table.partition_column}


def test_money_is_numeric_and_windows_partition_by_day_on_their_start():
    fields = {f["name"]: f for f in WINDOW_STATS.bigquery_schema()["fields"]}
    for money in ("total_amount_sum", "avg_transaction_amount", "max_amount", "min_amount"):
        assert fields[money]["type"] == "NUMERIC"
    assert fields["window_start_time"]["mode"] == "REQUIRED"
    assert fields["total_transactions"] == {**fields["total_transactions"], "type": "INT64",
                                            "mode": "REQUIRED"}
    assert WINDOW_STATS.bigquery_table_options()["timePartitioning"] == {
        "type": "DAY", "field": "window_start_time"}


@pytest.mark.parametrize("name", list(TABLES))
def test_duckdb_ddl_derives_from_the_columns(tmp_path, name):
    table = TABLES[name]
    con = duckdb.connect(str(tmp_path / "schema.duckdb"))
    try:
        con.execute(table.duckdb_ddl(name))
        con.execute(table.duckdb_ddl(name))  # IF NOT EXISTS: a second writer is harmless
        described = con.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position", [name]).fetchall()
        keys = con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", [name]).fetchall()
    finally:
        con.close()
    assert [d[0] for d in described] == list(table.names)
    for (_, data_type, nullable), column in zip(described, table.columns, strict=True):
        assert data_type == DUCK_TYPES[column.kind]
        assert nullable == ("NO" if column.required else "YES")
    assert [tuple(k[0]) for k in keys] == ([table.key] if table.key else [])


@pytest.mark.parametrize("name", list(TABLES))
def test_arrow_schema_derives_from_the_columns(name):
    table = TABLES[name]
    schema = table.arrow_schema()
    assert schema.names == list(table.names)
    assert [f.nullable for f in schema] == [not c.required for c in table.columns]


def _row(start: datetime, pane: int = 0, **stats) -> dict:
    values = {"total_transactions": 3, "total_amount_sum": Decimal("1000000.29"),
              "avg_transaction_amount": Decimal("333333.430000000"),
              "max_amount": Decimal("999999.99"), "min_amount": Decimal("0.1")}
    values.update(stats)
    return {"window_start_time": start, "window_end_time": start + timedelta(seconds=30),
            **values, "pane_timing": "ON_TIME" if pane == 0 else "LATE", "pane_index": pane,
            "processed_at": datetime(2026, 11, 27, 12, 0, 0, 123_456, tzinfo=UTC)}


def test_json_row_is_rfc3339_utc_and_exact_money():
    plus_two = timezone(timedelta(hours=2))
    row = _row(datetime(2026, 11, 27, 12, 0, 30, tzinfo=plus_two),
               total_amount_sum=Decimal("1E+6"), avg_transaction_amount=None,
               min_amount=Decimal("0.000000001"))
    row["not_a_column"] = "dropped"
    out = WINDOW_STATS.to_json_row(row)
    assert list(out) == list(WINDOW_STATS.names)
    assert out["window_start_time"] == "2026-11-27T10:00:30.000Z"
    assert out["window_end_time"] == "2026-11-27T10:01:00.000Z"
    assert out["processed_at"] == "2026-11-27T12:00:00.123456Z"  # microseconds are kept
    assert out["total_amount_sum"] == "1000000.00"
    assert out["max_amount"] == "999999.99"
    assert out["min_amount"] == "0.000000001"
    assert out["avg_transaction_amount"] is None
    assert out["total_transactions"] == 3 and out["pane_index"] == 0
    assert WINDOW_STATS.to_jsonl(row).startswith('{"window_start_time":"2026-11-27T10:00:30.000Z"')


def test_json_timestamps_keep_microseconds_of_session_windows():
    start = datetime(2026, 11, 27, 10, 0, 0, 250_001, tzinfo=UTC)  # a session's first event
    out = WINDOW_STATS.to_json_row(_row(start))
    assert out["window_start_time"] == "2026-11-27T10:00:00.250001Z"
    assert out["window_end_time"] == "2026-11-27T10:00:30.250001Z"
    assert WINDOW_STATS.to_json_row(_row(start.replace(microsecond=250_000)))[
        "window_start_time"] == "2026-11-27T10:00:00.250Z"


def test_insert_ids_are_stable_per_window_and_pane():
    start = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    first = _row(start)
    retried = {**first, "processed_at": datetime.now(UTC)}  # the same pane, written again
    same_instant = {**first, "window_start_time": start.astimezone(timezone(timedelta(hours=5))),
                    "window_end_time": first["window_end_time"].astimezone(
                        timezone(timedelta(hours=-3)))}
    assert insert_id(first, WINDOW_STATS) == insert_id(retried, WINDOW_STATS)
    assert insert_id(first, WINDOW_STATS) == insert_id(same_instant, WINDOW_STATS)
    assert insert_id(first, WINDOW_STATS) != insert_id(_row(start, pane=1), WINDOW_STATS)
    assert insert_id(first, WINDOW_STATS) != insert_id(
        _row(start + timedelta(seconds=30)), WINDOW_STATS)
    assert len(insert_id(first, WINDOW_STATS)) <= 128
    # a new job (after a drain) numbers panes from 0 again: its ids must differ
    assert insert_id(first, WINDOW_STATS, "run-a") == insert_id(retried, WINDOW_STATS, "run-a")
    assert insert_id(first, WINDOW_STATS, "run-a") != insert_id(first, WINDOW_STATS, "run-b")


def _write(path: str, rows: list[dict], dead: list[dict]) -> None:
    sink = DuckDBSink(path, table="hourly_sales_aggregation", dead_letter_table="dead_letters")
    with beam.Pipeline() as pipeline:
        pipeline | "Rows" >> beam.Create(rows) | "WriteWindows" >> sink.windows()
        pipeline | "Dead" >> beam.Create(dead) | "WriteDead" >> sink.dead_letters()


def test_duckdb_sink_upserts_on_window_and_pane(tmp_path):
    path = str(tmp_path / "nested" / "warehouse.duckdb")
    start = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    rows = [_row(start + timedelta(seconds=30 * i), pane) for i in range(50) for pane in (0, 1)]
    rows.append(_row(start + timedelta(days=400), 0,
                     total_amount_sum=Decimal("99999999999999900000")))  # a huge, exact sum
    dead = [{"reason": "malformed_json", "message": "not JSON", "payload": "x\\xff",
             "seen_at": start}]
    _write(path, rows, dead)
    # a retry writes the first 10 panes again, one of them with a corrected count
    again = rows[:10]
    again[3] = {**again[3], "total_transactions": 4}
    _write(path, again, [])

    con = duckdb.connect(path, read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        count, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (window_start_time, window_end_time, pane_index)) "
            "FROM hourly_sales_aggregation").fetchone()
        updated = con.execute(
            "SELECT total_transactions FROM hourly_sales_aggregation "
            "WHERE window_start_time = ? AND pane_index = ?",
            [rows[3]["window_start_time"], rows[3]["pane_index"]]).fetchone()
        huge = con.execute("SELECT max(total_amount_sum) FROM hourly_sales_aggregation").fetchone()
        first = con.execute(
            "SELECT window_start_time, total_amount_sum, min_amount, processed_at "
            "FROM hourly_sales_aggregation ORDER BY window_start_time, pane_index LIMIT 1"
        ).fetchone()
        dead_rows = con.execute("SELECT reason, payload, seen_at FROM dead_letters").fetchall()
    finally:
        con.close()
    assert count == distinct == len(rows)
    assert updated == (4,)
    assert huge == (Decimal("99999999999999900000"),)
    assert first[0] == start and first[0].utcoffset() == timedelta(0)
    assert (first[1], first[2]) == (Decimal("1000000.29"), Decimal("0.1"))
    assert first[3] == datetime(2026, 11, 27, 12, 0, 0, 123_456, tzinfo=UTC)
    assert [(r, p) for r, p, _ in dead_rows] == [("malformed_json", "x\\xff")]

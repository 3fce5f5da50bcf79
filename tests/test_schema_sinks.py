"""The output row, defined once: BigQuery schema, DuckDB DDL, Arrow schema and JSON rows all
derive from the same columns; rows are keyed by run and pane, the DuckDB sink keeps the first
write of a key, and the totals view adds up runs — checked against sums made here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txpipe import money
from txpipe.contract import Reason
from txpipe.schema import (
    BIGQUERY_REJECTED,
    DEAD_LETTER_REASONS,
    DEAD_LETTERS,
    DIMENSION_STATS,
    WINDOW_STATS,
    Kind,
    TableNames,
)
from txpipe.sinks import RunIdentity
from txpipe.sinks.duckdb import DuckDBSink, connect

TABLES = {"window_stats": WINDOW_STATS, "dimension_stats": DIMENSION_STATS,
          "dead_letters": DEAD_LETTERS}
DUCK_TYPES = {Kind.TIMESTAMP: "TIMESTAMP WITH TIME ZONE", Kind.INTEGER: "BIGINT",
              Kind.MONEY: "DECIMAL(38,9)", Kind.STRING: "VARCHAR"}


def test_the_window_row_has_the_issues_columns_in_order_then_its_run():
    assert WINDOW_STATS.names == (
        "window_start_time", "window_end_time", "total_transactions", "total_amount_sum",
        "avg_transaction_amount", "max_amount", "min_amount", "pane_timing", "pane_index",
        "processed_at", "run_id", "accumulation")
    assert WINDOW_STATS.key == ("run_id", "window_start_time", "window_end_time", "pane_index")
    assert DEAD_LETTERS.key == ("dead_letter_id",)


def test_the_dead_letter_reasons_are_the_contracts_and_the_sinks():
    # the message contract keeps its six reasons; the sink's own is documented beside them
    assert [r.value for r in Reason] == list(DEAD_LETTER_REASONS[:-1])
    assert DEAD_LETTER_REASONS[-1] == BIGQUERY_REJECTED not in {r.value for r in Reason}
    description = {c.name: c.description for c in DEAD_LETTERS.columns}["reason"]
    assert all(reason in description for reason in DEAD_LETTER_REASONS)


@pytest.mark.parametrize("name", list(TABLES))
def test_bigquery_schema_is_one_bigquery_accepts(name):
    from google.cloud.bigquery import SchemaField
    from google.cloud.bigquery.enums import StandardSqlTypeNames

    table = TABLES[name]
    fields = [SchemaField.from_api_repr(f) for f in table.bigquery_schema()["fields"]]
    legal = {t.value for t in StandardSqlTypeNames} - {"TYPE_KIND_UNSPECIFIED"}
    for field in fields:
        assert field.field_type in legal and field.mode in ("REQUIRED", "NULLABLE"), field
        assert field.description
    partition = table.bigquery_table_options()["timePartitioning"]
    assert partition["type"] == "DAY"
    [column] = [f for f in fields if f.name == partition["field"]]
    assert (column.field_type, column.mode) == ("TIMESTAMP", "REQUIRED")


def test_money_is_numeric_and_windows_partition_by_day_on_their_start():
    fields = {f["name"]: f for f in WINDOW_STATS.bigquery_schema()["fields"]}
    for column in ("total_amount_sum", "avg_transaction_amount", "max_amount", "min_amount"):
        assert fields[column]["type"] == "NUMERIC"
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


@settings(max_examples=2000, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=9,  # stored money: NUMERIC
                   min_value=Decimal("-1e20"), max_value=Decimal("1e20"))
       | st.integers(1, 10**15).map(lambda n: Decimal(n).scaleb(-9).normalize()))
def test_money_text_is_plain_exact_and_has_at_least_cents(amount):
    text = money.to_text(amount)
    assert Decimal(text) == amount and "E" not in text.upper()
    whole, _, fraction = text.lstrip("-").partition(".")
    assert whole.isdigit() and fraction.isdigit()
    written = max(0, -amount.normalize(money.CONTEXT).as_tuple().exponent)
    assert len(fraction) == max(2, written)  # no trailing zero beyond the cents


def test_json_timestamps_keep_microseconds_of_session_windows():
    start = datetime(2026, 11, 27, 10, 0, 0, 250_001, tzinfo=UTC)  # a session's first event
    out = WINDOW_STATS.to_json_row(_row(start))
    assert out["window_start_time"] == "2026-11-27T10:00:00.250001Z"
    assert out["window_end_time"] == "2026-11-27T10:00:30.250001Z"
    assert WINDOW_STATS.to_json_row(_row(start.replace(microsecond=250_000)))[
        "window_start_time"] == "2026-11-27T10:00:00.250Z"


def test_storage_write_rows_encode_with_beams_row_coder_for_the_schema():
    """What crosses to Beam's Java Storage Write transform: a Beam Row of the table's
    schema, encoded by the RowCoder Beam derives from it (the part that runs here)."""
    from apache_beam.coders import RowCoder
    from apache_beam.io.gcp import bigquery_tools
    from apache_beam.typehints.row_type import RowTypeConstraint

    row = RunIdentity("run-a").stamp(_row(datetime(2026, 11, 27, 10, tzinfo=UTC)))
    hints = bigquery_tools.get_beam_typehints_from_tableschema(
        bigquery_tools.get_bq_tableschema(WINDOW_STATS.bigquery_schema()))
    coder = RowCoder.from_type_hint(RowTypeConstraint.from_fields(hints), None)
    beam_row = bigquery_tools.beam_row_from_dict(WINDOW_STATS.to_storage_row(row),
                                                 WINDOW_STATS.bigquery_schema())
    decoded = coder.decode(coder.encode(beam_row))
    assert decoded.total_amount_sum == Decimal("1000000.290000000")
    assert decoded.window_start_time.to_utc_datetime(has_tz=True) == row["window_start_time"]
    assert decoded.run_id == "run-a" and decoded.pane_index == 0


def _write(path: str, rows: list[dict], dead: list[dict], run: RunIdentity) -> None:
    sink = DuckDBSink(path, TableNames("hourly_sales_aggregation", "dead_letters"))
    with beam.Pipeline() as pipeline:
        pipeline | "Rows" >> beam.Create(rows) | "WriteWindows" >> sink.windows(run)
        pipeline | "Dead" >> beam.Create(dead) | "WriteDead" >> sink.dead_letters(run)


def _read(path: str, sql: str) -> list[tuple]:
    con = connect(path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_duckdb_sink_keeps_the_first_write_of_a_key_and_every_run(tmp_path):
    path = str(tmp_path / "nested" / "warehouse.duckdb")
    start = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    rows = [_row(start + timedelta(seconds=30 * i), pane) for i in range(50) for pane in (0, 1)]
    rows.append(_row(start + timedelta(days=400), 0,
                     total_amount_sum=Decimal("99999999999999900000")))  # a huge, exact sum
    dead = [{"reason": "malformed_json", "message": "not JSON", "payload": "x\\xff",
             "seen_at": start, "run_id": "run-a", "dead_letter_id": "d1"}]
    _write(path, rows, dead, RunIdentity("run-a"))
    before = _read(path, "SELECT * FROM hourly_sales_aggregation ORDER BY ALL")
    # a retry (or rerun) of run-a writes the first 10 panes again, one of them changed, and
    # its dead letter again: nothing it had written changes
    again = rows[:10]
    again[3] = {**again[3], "total_transactions": 4}
    _write(path, again, dead, RunIdentity("run-a"))
    assert _read(path, "SELECT * FROM hourly_sales_aggregation ORDER BY ALL") == before
    # another run (a restart: panes from 0 again) writes beside it, overwriting nothing
    _write(path, rows[:4], [{**dead[0], "run_id": "run-b", "dead_letter_id": "d2"}],
           RunIdentity("run-b"))
    after = _read(path, "SELECT * FROM hourly_sales_aggregation ORDER BY ALL")
    assert set(before) <= set(after) and len(after) == len(before) + 4
    assert _read(path, "SELECT run_id, count(*) FROM hourly_sales_aggregation GROUP BY 1 "
                       "ORDER BY 1") == [("run-a", len(rows)), ("run-b", 4)]
    assert _read(path, "SELECT max(total_amount_sum) FROM hourly_sales_aggregation") == [
        (Decimal("99999999999999900000"),)]
    first = _read(path, "SELECT window_start_time, total_amount_sum, min_amount, processed_at "
                        "FROM hourly_sales_aggregation ORDER BY window_start_time, pane_index "
                        "LIMIT 1")[0]
    assert first[0] == start and first[0].utcoffset() == timedelta(0)
    assert (first[1], first[2]) == (Decimal("1000000.29"), Decimal("0.1"))
    assert first[3] == datetime(2026, 11, 27, 12, 0, 0, 123_456, tzinfo=UTC)
    assert _read(path, "SELECT reason, payload, run_id FROM dead_letters ORDER BY 3") == [
        ("malformed_json", "x\\xff", "run-a"), ("malformed_json", "x\\xff", "run-b")]


def _pane(start: datetime, pane: int, count: int, total: str, lo: str, hi: str) -> dict:
    return _row(start, pane, total_transactions=count, total_amount_sum=Decimal(total),
                min_amount=Decimal(lo), max_amount=Decimal(hi))


def test_window_totals_add_each_runs_panes_once(tmp_path):
    """Three runs over overlapping windows: one accumulating with early and late panes, one
    discarding, one stored twice (what a BigQuery rerun leaves). The view, run by DuckDB on a
    table without a key (as in BigQuery), equals the totals reckoned here."""
    a, b = datetime(2026, 11, 27, 10, 0, tzinfo=UTC), datetime(2026, 11, 27, 10, 0, 30,
                                                                tzinfo=UTC)
    accumulating = RunIdentity("stream-1")
    discarding = RunIdentity("stream-2", "discarding")
    twice = RunIdentity("replay-3")
    rows = [accumulating.stamp(r) for r in (
        _pane(a, 0, 2, "3.00", "1.00", "2.00"), _pane(a, 1, 5, "10.50", "0.50", "4.00"),
        _pane(a, 2, 6, "20.50", "0.50", "10.00"), _pane(b, 0, 1, "7.00", "7.00", "7.00"))]
    rows += [discarding.stamp(r) for r in (
        _pane(a, 0, 3, "3.30", "1.10", "1.10"), _pane(a, 1, 1, "0.25", "0.25", "0.25"))]
    rows += [twice.stamp(r) for r in (_pane(b, 0, 4, "40.00", "5.00", "15.00"),) * 2]
    expected = {  # window start -> (count, sum, min, max, runs)
        a: (6 + 3 + 1, Decimal("20.50") + Decimal("3.30") + Decimal("0.25"),
            Decimal("0.25"), Decimal("10.00"), 2),
        b: (1 + 4, Decimal("47.00"), Decimal("5.00"), Decimal("15.00"), 2),
    }
    con = duckdb.connect(str(tmp_path / "view.duckdb"))
    try:
        con.execute("SET TimeZone='UTC'")
        panes = WINDOW_STATS.to_arrow(rows)  # noqa: F841 - read by DuckDB's replacement scan
        con.execute("CREATE TABLE stored AS SELECT * FROM panes")
        got = con.execute(
            "SELECT window_start_time, total_transactions, total_amount_sum, min_amount, "
            f"max_amount, runs FROM ({WINDOW_STATS.totals_sql('stored')}) ORDER BY 1").fetchall()
    finally:
        con.close()
    assert {r[0]: r[1:] for r in got} == expected

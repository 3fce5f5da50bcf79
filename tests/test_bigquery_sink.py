"""The BigQuery sink (Beam's streaming-insert writer) against a real BigQuery emulator.

bqemulator serves the REST API on a free port; the pipeline runs on the DirectRunner with
BIGQUERY_EMULATOR_HOST set and no credentials at all. Expected rows are computed here from the
test's own messages, not by the pipeline's code.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import unique_settings

from txpipe.contract import encode_message
from txpipe.pipeline import build_pipeline
from txpipe.resources import bigquery_client
from txpipe.sinks import BigQuerySink
from txpipe.sources import MessagesSource

START = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def messages() -> tuple[list[bytes], dict[datetime, list[Decimal]]]:
    """Valid transactions over four 30 s windows, one duplicate and two bad messages."""
    raw, expected = [], defaultdict(list)
    for i in range(40):
        moment = START + timedelta(seconds=3 * i + 0.5)
        amount = Decimal(f"{(i * 37) % 500 + 1}.{i % 100:02d}")
        data, _ = encode_message(f"tx-{i:03d}", amount, moment, category="books")
        raw.append(data)
        window = START + timedelta(seconds=30 * ((3 * i) // 30))
        expected[window].append(amount)
    raw.append(raw[7])  # a redelivery: must be counted once
    raw.append(b"{not json")
    raw.append(json.dumps({"transaction_id": "neg", "amount": -5,
                           "timestamp": "2026-11-27T10:00:01Z"}).encode())
    return raw, expected


def test_window_rows_and_dead_letters_arrive_in_bigquery(bigquery_emulator):
    settings = unique_settings(window_size_seconds=30)
    raw, expected = messages()
    client = bigquery_client(settings.project_id)
    dataset = f"{settings.project_id}.{settings.bigquery_dataset_id}"
    # Only the dataset: the sink creates its tables (CREATE_IF_NEEDED, partitioned, clustered).
    client.create_dataset(dataset)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        build_pipeline(p, settings, MessagesSource(tuple(raw)), BigQuerySink.from_settings(settings))

    rows = list(client.query(
        f"SELECT * FROM `{dataset}.{settings.bigquery_table_id}` ORDER BY window_start_time"
    ).result())
    assert [r.window_start_time for r in rows] == sorted(expected)
    for row in rows:
        amounts = expected[row.window_start_time]
        assert row.window_end_time == row.window_start_time + timedelta(seconds=30)
        assert row.total_transactions == len(amounts)
        assert row.total_amount_sum == sum(amounts)
        assert row.max_amount == max(amounts) and row.min_amount == min(amounts)
        assert row.pane_timing == "ON_TIME" and row.pane_index == 0
    assert sum(r.total_transactions for r in rows) == 40

    dead = list(client.query(
        f"SELECT reason, payload FROM `{dataset}.{settings.bigquery_dead_letter_table_id}` "
        "ORDER BY reason").result())
    assert [(d.reason, d.payload[:9]) for d in dead] == [
        ("invalid_amount", '{"transac'), ("malformed_json", "{not json")]

    table = client.get_table(f"{dataset}.{settings.bigquery_table_id}")
    assert table.time_partitioning.field == "window_start_time"
    assert table.clustering_fields == ["window_start_time"]
    assert {f.name: f.mode for f in table.schema}["total_amount_sum"] == "REQUIRED"

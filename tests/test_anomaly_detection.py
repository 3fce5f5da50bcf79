"""Anomaly detection (txpipe.anomaly) on real runners, against the simulator's labelled truth.

- the default scenario at the default settings: precision and recall >= 0.9 on a seeded replay;
- per dimension, through the CLI: the spiked category's own series is flagged, and every
  anomaly row carries the value its window row holds;
- streaming (TestStream): each window is scored once, from its ON_TIME pane, in event-time
  order, after the warm-up — early and late panes are not scored;
- the warm-up wrapper answers exactly as Beam's detector does once it has spoken.
"""

from __future__ import annotations

import glob
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import apache_beam as beam
import duckdb
import pytest
from apache_beam.ml.anomaly.detectors import IQR
from apache_beam.ml.anomaly.univariate.quantile import BufferedSlidingQuantileTracker
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that
from apache_beam.utils.timestamp import Timestamp
from conftest import unique_settings
from test_cli_run import clean_env

from simulator import SimulationConfig, Truth, write
from txpipe.anomaly import DEFAULT_THRESHOLDS, METRICS, AnomalySpec, ScoreWindows, WarmedUp
from txpipe.cli import main as run_main
from txpipe.config import Detector, load_settings
from txpipe.contract import encode_message
from txpipe.pipeline import TransactionStats, build_pipeline
from txpipe.schema import ANOMALIES
from txpipe.sinks import DuckDBSink
from txpipe.sources import FileSource
from txpipe.windowing import WindowSpec

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TARGET = 0.9


def simulate(path, **changes) -> Truth:
    from simulator import TruthBuilder

    cfg = SimulationConfig(**{**dict(
        seed=3, rate=5.0, duration=7200.0, start=START, duplicate_rate=0.05,
        malformed_rate=0.02, late_rate=0.01, jitter_seconds=2.0, anomalies=("default",)),
        **changes})
    builder = TruthBuilder(cfg.window_size)
    stats = write(cfg, path, truth=builder)
    return builder.build(stats.config)


def table(con, name: str) -> list[dict]:
    cursor = con.execute(f'SELECT * FROM "{name}"')
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_default_scenario_default_settings_precision_and_recall(tmp_path):
    truth = simulate(tmp_path / "stream.jsonl")
    settings = load_settings(env_file=None, anomalies=True)  # every other setting: default
    warehouse = str(tmp_path / "warehouse.duckdb")
    with beam.Pipeline(options=PipelineOptions([])) as p:
        build_pipeline(p, settings, FileSource(str(tmp_path / "stream.jsonl")),
                       DuckDBSink(warehouse))
    con = duckdb.connect(warehouse)
    con.execute("SET TimeZone='UTC'")
    anomalies = table(con, "anomalies")
    windows = {r["window_start_time"]: r for r in table(con, "hourly_sales_aggregation")}

    quality = truth.score_anomalies(anomalies)
    assert quality.injected == 11  # 2 h of 30 s windows, 20 of warm-up, one per 20 windows
    assert quality.precision >= TARGET and quality.recall >= TARGET, quality.summary()
    for row in anomalies:  # each row is what its window holds, scored as the settings say
        assert row["dimension"] is None and row["dimension_value"] is None
        assert row["value"] == Decimal(windows[row["window_start_time"]][row["metric"]])
        assert row["window_end_time"] - row["window_start_time"] == timedelta(seconds=30)
        assert row["threshold"] == DEFAULT_THRESHOLDS[Detector.IQR] <= row["score"]
        assert (row["detector"], row["label"]) == ("IQR", "outlier")


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory):
    """35 windows at 5 tx/s, a category's volume x10 in one window of every ten after 10 of warm-up."""
    work = tmp_path_factory.mktemp("small")
    truth = simulate(work / "stream.jsonl", rate=5.0, duration=1050.0, anomaly_warmup=10,
                     anomaly_rate=0.1, anomalies=("volume_spike",))
    return work, truth


def test_per_dimension_the_spiked_category_is_flagged(small_stream):
    work, truth = small_stream
    settings = load_settings(env_file=None, anomalies=True, anomaly_warmup=10)
    warehouse = str(work / "breakdown.duckdb")
    with beam.Pipeline(options=PipelineOptions([])) as p:
        build_pipeline(p, settings, FileSource(str(work / "stream.jsonl")),
                       DuckDBSink(warehouse), breakdown="category")
    con = duckdb.connect(warehouse)
    con.execute("SET TimeZone='UTC'")
    found = table(con, "anomalies")
    per_value = {(r["window_start_time"], r["dimension_value"]): r
                 for r in table(con, "hourly_sales_aggregation_by_dimension")}
    for row in (r for r in found if r["dimension"] == "category"):
        assert row["value"] == per_value[(row["window_start_time"], row["dimension_value"])][
            row["metric"]]
    flagged = {(r["window_start_time"], r["dimension_value"]) for r in found
               if r["dimension"] == "category" and r["metric"] == "total_transactions"}
    assert len(truth.anomalies) >= 2
    for spike in truth.anomalies:
        (category,) = spike.series["category"]
        assert (spike.start, category) in flagged
    assert truth.score_anomalies(found).recall == 1.0


def test_the_cli_writes_anomaly_files_and_counts_them(small_stream, in_process):
    work, _ = small_stream
    proc = in_process(run_main, [
        "--source", "file", "--input", "stream.jsonl", "--sink", "jsonl", "--output",
        "out/windows", "--anomalies", "--anomaly-warmup", "10", "--anomaly-output", "out/found"],
        cwd=work, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    files = glob.glob(str(work / "out/found-*.anomalies.jsonl"))
    found = [json.loads(line) for f in files for line in Path(f).read_text().splitlines()]
    assert int(proc.stdout.split("anomalies=")[1].split()[0]) == len(found) > 0
    assert all(list(row) == list(ANOMALIES.names) for row in found)
    windows = {}
    for f in glob.glob(str(work / "out/windows-*-of-*[0-9].jsonl")):  # the window table's
        for line in Path(f).read_text().splitlines():
            row = json.loads(line)
            windows[row["window_start_time"]] = row
    for row in found:  # money as exact decimal strings, equal to the window's own
        assert Decimal(row["value"]) == Decimal(str(windows[row["window_start_time"]][row["metric"]]))


COUNTS = [18 + (k * 3) % 5 for k in range(9)] + [200, 19, 21]  # window 9: a spike


def _streaming_messages():
    """12 windows of about 20 transactions, window 9 a spike; one late event for window 3."""
    stream = test_stream.TestStream()
    for k, count in enumerate(COUNTS):
        begin = START + timedelta(seconds=30 * k)
        stream.advance_watermark_to(Timestamp.from_utc_datetime(begin))
        batch = []
        for i in range(count):
            moment = begin + timedelta(seconds=i * 0.1)
            data, _ = encode_message(f"w{k}-{i}", Decimal("10.00"), moment, category="books")
            batch.append(beam.window.TimestampedValue(data, Timestamp.from_utc_datetime(moment)))
        stream.add_elements(batch)
        stream.advance_processing_time(6)  # an EARLY pane
        if k == 4:  # window 3 has fired: this one makes a LATE pane
            late = START + timedelta(seconds=30 * 3 + 1)
            data, _ = encode_message("late", Decimal("10.00"), late, category="books")
            stream.add_elements([beam.window.TimestampedValue(
                data, Timestamp.from_utc_datetime(late))])
    stream.advance_watermark_to_infinity()
    return stream


def test_streaming_scores_each_window_once_from_its_on_time_pane():
    spec = WindowSpec(size_seconds=30, allowed_lateness_seconds=60, early_firing_seconds=5)
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True

    def check(rows):
        by_window = {}
        for row in rows:
            by_window.setdefault(row["window_start_time"], {})[row["metric"]] = row
        assert len(rows) == 12 * len(METRICS) and len(by_window) == 12
        ordered = [by_window[k] for k in sorted(by_window)]
        # window 3's score is its on-time pane's count, without the late event
        assert [w["total_transactions"]["value"] for w in ordered] == [Decimal(c) for c in COUNTS]
        labels = [w["total_transactions"]["label"] for w in ordered]
        assert labels == ["warming_up"] * 5 + ["normal"] * 4 + ["outlier"] + ["normal"] * 2
        assert ordered[9]["total_transactions"]["score"] >= DEFAULT_THRESHOLDS[Detector.IQR]

    def every_pane_kind(kinds):
        assert set(kinds) == {"EARLY", "ON_TIME", "LATE"}, kinds

    with beam.Pipeline(options=options) as p:
        stats = p | _streaming_messages() | TransactionStats(spec)
        assert_that(stats.windows | beam.Map(lambda r: r["pane_timing"]), every_pane_kind,
                    label="PaneKinds")
        scored = stats.windows | ScoreWindows(AnomalySpec(warmup=5, history=20))
        assert_that(scored, check, label="ScoredOnce")


def test_warm_up_then_the_detectors_own_score():
    values = [20.0, 22, 19, 21, 20, 23, 18, 20, 95, 21, 20, 2]
    wrapped = AnomalySpec(warmup=4, history=50).build()
    bare = IQR(q1_tracker=BufferedSlidingQuantileTracker(50, 0.25))
    assert isinstance(wrapped, WarmedUp)
    for i, v in enumerate(values):
        x = beam.Row(value=v)
        got, want = wrapped.score_one(x), bare.score_one(x)
        wrapped.learn_one(x)
        bare.learn_one(x)
        assert math.isnan(got) if i < 4 else got == want
    assert wrapped._threshold_criterion.threshold == DEFAULT_THRESHOLDS[Detector.IQR]
    # the spec survives Beam's own round trip, which workers use to rebuild the detector
    rebuilt = type(wrapped).from_spec(wrapped.to_spec())
    assert isinstance(rebuilt, WarmedUp) and rebuilt._model_id == "IQR"


@pytest.mark.parametrize("argv, says", [
    (["--alert-topic", "alerts"], "--anomalies"),
    (["--anomalies", "--alert-topic", "alerts"], "streaming"),
    (["--anomaly-output", "x"], "--anomalies"),
    (["--anomalies", "--anomaly-warmup", "200"], "ANOMALY_WARMUP"),
    (["--anomalies", "--anomaly-detector", "prophet"], "invalid choice"),
    (["--anomalies", "--anomaly-threshold", "0"], "ANOMALY_THRESHOLD"),
])
def test_anomaly_flag_mistakes_are_one_line(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("ANOMALIES", "ANOMALY_WARMUP", "ANOMALY_HISTORY", "PUBSUB_ALERT_TOPIC_ID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "in.jsonl").write_text("{}\n")
    code = run_main(["--source", "file", "--input", "in.jsonl", "--sink", "jsonl",
                     "--output", "out/w", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_anomalies_are_published_to_the_alert_topic(small_stream, pubsub_emulator):
    from google.cloud import pubsub_v1

    work, _ = small_stream
    tag = uuid.uuid4().hex[:8]
    settings = unique_settings(anomalies=True, anomaly_warmup=10,
                               pubsub_alert_topic_id=f"alerts-{tag}")
    assert settings.alert_topic_path in pubsub_emulator.ensure_resources(settings)
    subscriber = pubsub_v1.SubscriberClient()
    subscription = f"projects/{settings.project_id}/subscriptions/alerts-{tag}-sub"
    subscriber.create_subscription(name=subscription, topic=settings.alert_topic_path)
    warehouse = str(work / f"alerts-{tag}.duckdb")
    with beam.Pipeline(options=PipelineOptions([])) as p:
        build_pipeline(p, settings, FileSource(str(work / "stream.jsonl")), DuckDBSink(warehouse))
    con = duckdb.connect(warehouse)
    con.execute("SET TimeZone='UTC'")
    stored = sorted(ANOMALIES.to_jsonl(row) for row in table(con, "anomalies"))
    assert stored
    published = []
    while len(published) < len(stored):
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=30)
        if not response.received_messages:
            break
        published += [m.message.data.decode() for m in response.received_messages]
        subscriber.acknowledge(subscription=subscription,
                               ack_ids=[m.ack_id for m in response.received_messages])
    subscriber.close()
    assert sorted(published) == stored  # the rows of the anomaly table, as JSON

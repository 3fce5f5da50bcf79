"""Publishing to a real Pub/Sub emulator: every message arrives, and every failure is counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
from emulator import pull_all

from simulator import SimulationConfig, Truth, TruthBuilder, generate, publish, run
from simulator.cli import main as simulator_main
from simulator.pubsub import PubSubSink, RetryPolicy
from simulator.sinks import TargetError
from simulator.stats import PublishStats, Recorder
from txpipe.lab.local import free_port

PROJECT = "txpipe-test"  # the project the shared emulator fixtures use
FAULTS = dict(duplicate_rate=0.05, malformed_rate=0.03, late_rate=0.02, jitter_seconds=2.0)


def as_counter(items) -> Counter:
    return Counter((data, tuple(sorted(attributes.items()))) for data, attributes in items)


def simulator(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulator", "--target", "pubsub", "--project", PROJECT, *args]


def test_publish_delivers_every_message_exactly_as_generated(pubsub_settings):
    cfg = SimulationConfig(seed=4, count=5000, rate=0, **FAULTS)
    truth = TruthBuilder(cfg.window_size)
    reports: list[int] = []
    stats = publish(cfg, pubsub_settings.topic_path, lambda s: reports.append(s.published),
                    truth=truth)
    assert (stats.published, stats.failed, stats.generated) == (5000, 0, 5000)
    assert reports and reports[-1] == 5000

    sent = list(generate(stats.config))  # the same stream, from the start the run used
    received = pull_all(pubsub_settings.subscription_path, expected=5000)
    assert as_counter(received.values()) == as_counter((m.data, m.attributes) for m in sent)
    assert truth.build(stats.config) == Truth.from_messages(stats.config, sent)


def test_paced_publishing_keeps_to_the_rate_and_stops_on_request(pubsub_settings):
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    stats = publish(SimulationConfig(count=0, rate=200.0), pubsub_settings.topic_path,
                    stop_event=stop)
    assert stats.interrupted and stats.failed == 0
    assert stats.published == stats.generated
    assert 150 <= stats.published <= 260  # ~1 s at 200 msg/s
    received = pull_all(pubsub_settings.subscription_path, expected=stats.published)
    assert len(received) == stats.published


def test_cli_publishes_everything_and_reports_it(pubsub_settings, tmp_path, in_process):
    stats_path, truth_path = tmp_path / "stats.json", tmp_path / "truth.json"
    result = in_process(simulator_main, simulator(
        "--topic", pubsub_settings.pubsub_topic_id, "--count", "3000", "--rate", "0",
        "--malformed-rate", "0.05", "--stats-json", str(stats_path),
        "--truth", str(truth_path))[3:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(stats_path.read_text())
    assert (stats["published"], stats["failed"]) == (3000, 0)
    received = pull_all(pubsub_settings.subscription_path, expected=3000)
    assert len(received) == 3000
    truth = Truth.from_json(truth_path)
    assert truth.messages == 3000 and sum(truth.malformed.values()) == stats["by_kind"]["malformed"]


def test_missing_topic_is_one_line_unless_created(pubsub_emulator, tmp_path, in_process):
    topic = f"absent-{uuid.uuid4().hex[:8]}"
    missing = in_process(simulator_main, simulator("--topic", topic, "--count", "10", "--rate",
                                                   "0")[3:], cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    assert "--create-topic" in missing.stderr
    created = in_process(simulator_main, simulator("--topic", topic, "--count", "10", "--rate",
                                                   "0", "--create-topic")[3:], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "published 10 messages" in created.stderr


def test_rejected_requests_are_counted_failed_never_dropped(pubsub_emulator):
    stats = PublishStats(target="missing")
    sink = PubSubSink(f"projects/{PROJECT}/topics/never-created", Recorder(stats))
    run(SimulationConfig(count=2500, rate=0), sink, stats, paced=False)
    assert (stats.generated, stats.published, stats.failed) == (2500, 0, 2500)
    assert stats.errors and stats.errors[0].startswith("NOT_FOUND")
    assert "2,500 failed" in stats.summary()


def test_unreachable_server_is_retried_with_backoff_then_counted_failed(monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    stats = PublishStats(target="nowhere")
    sink = PubSubSink(f"projects/{PROJECT}/topics/t-nowhere", Recorder(stats),
                      retry=RetryPolicy(initial=0.05, deadline=1.0))
    started = time.monotonic()
    run(SimulationConfig(count=1500, rate=0), sink, stats, paced=False)
    assert (stats.published, stats.failed) == (0, 1500)
    assert stats.retries >= 2 and stats.errors[0].startswith("UNAVAILABLE")
    assert time.monotonic() - started < 15
    with pytest.raises(TargetError, match="cannot reach the Pub/Sub emulator"):
        publish(SimulationConfig(count=1), f"projects/{PROJECT}/topics/t-nowhere")


@pytest.mark.subprocess
def test_sigint_flushes_pending_messages_and_exits_0(pubsub_settings, tmp_path):
    stats_path = tmp_path / "stats.json"
    proc = subprocess.Popen(
        simulator("--topic", pubsub_settings.pubsub_topic_id, "--rate", "400", "--count", "0",
                  "--stats-json", str(stats_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ})
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped early" in err and err.count("\n") == 1
    stats = json.loads(stats_path.read_text())
    assert stats["failed"] == 0 and stats["published"] > 100
    received = pull_all(pubsub_settings.subscription_path, expected=stats["published"])
    assert len(received) == stats["published"]

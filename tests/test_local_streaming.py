"""Local streaming against the real Pub/Sub emulator: what was pulled is what gets written.

- a backlog published before the pipeline starts is counted in full (a watermark that follows
  the data, not the wall clock);
- a missing, empty or unparseable ``event_ts`` attribute blocks nothing: the message counts by
  its payload's timestamp, the rest of the pull is processed and acknowledged;
- ``python -m txpipe run`` stopped mid-stream by Ctrl+C or SIGTERM drains: every transaction it
  pulled is in the warehouse, checked against the simulator's record of what was published
  minus what is still in the subscription; a second signal cancels and says what was left.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from conftest import unique_settings
from emulator import pull_all
from google.cloud import pubsub_v1

from simulator import SimulationConfig, TruthBuilder, publish
from txpipe.contract import ATTR_EVENT_TS, encode_message
from txpipe.lab import live
from txpipe.lab.demo import count_dead_letters, read_totals, read_windows
from txpipe.lab.direct_pubsub import LocalStreaming
from txpipe.pipeline import build_pipeline
from txpipe.sinks.duckdb import DuckDBSink
from txpipe.sources import PubSubSource
from txpipe.windowing import WindowSpec

WINDOW = 5


def _start(settings, warehouse: str) -> object:
    """The pipeline on the local read (its subscription is new: no restart hold)."""
    local = LocalStreaming()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    sink = DuckDBSink.from_settings(warehouse, settings)
    build_pipeline(pipeline, settings, PubSubSource(settings.subscription_path), sink,
                   dedupe=local.dedupe(settings.dedupe_horizon_seconds))
    return live.start(pipeline, WindowSpec.from_settings(settings), restart_hold=False)


def _windows(warehouse: str, settings) -> dict[datetime, tuple[int, Decimal]]:
    return {start: (r["total_transactions"], r["total_amount_sum"])
            for start, r in read_totals(warehouse, settings).items()}


def _truth(messages) -> dict[datetime, tuple[int, Decimal]]:
    builder = TruthBuilder(WINDOW)
    builder.add_all(messages)
    return {w.start: (w.count, w.sum) for w in builder.build().windows if w.count}


class _Record:
    """The simulator's truth hook: every message the service acknowledged, in order."""

    def __init__(self):
        self.messages: list = []
        self._lock = threading.Lock()

    def add_all(self, messages) -> None:
        with self._lock:
            self.messages.extend(messages)


def test_a_backlog_published_before_the_start_is_counted_in_full(pubsub_emulator, tmp_path):
    settings = unique_settings(window_size_seconds=WINDOW)
    pubsub_emulator.ensure_resources(settings)
    record = _Record()
    start = datetime.now(UTC) - timedelta(seconds=150)  # minutes older than window + lateness
    cfg = SimulationConfig(seed=3, count=3000, rate=25, start=start, duplicate_rate=0.02,
                           malformed_rate=0.01, window_size=WINDOW)
    stats = publish(cfg, settings.topic_path, truth=record)
    assert stats.published == 3000
    warehouse = str(tmp_path / "w.duckdb")
    handle = _start(settings, warehouse)
    assert handle.finish(60), "the read never caught up, or the drain did not end"
    assert handle.source_counters()["pulled"] == 3000
    assert _windows(warehouse, settings) == _truth(record.messages)
    assert len(_truth(record.messages)) >= 20  # two minutes of windows, none dropped as late


def test_a_poison_timestamp_attribute_blocks_nothing(pubsub_emulator, tmp_path, caplog):
    settings = unique_settings(window_size_seconds=WINDOW)
    pubsub_emulator.ensure_resources(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    publisher = pubsub_v1.PublisherClient()
    sent = []
    poison = {"missing": None, "empty": "", "unparseable": "not-a-time", "no offset":
              "2026-11-27T10:00:00", "a float": "1.5e12"}
    for n in range(200):
        event = now - timedelta(seconds=30) + timedelta(milliseconds=97 * n)
        data, attributes = encode_message(f"p-{n}", Decimal(n + 1) / 4, event)
        bad = list(poison.values())[n // 20 % len(poison)] if n % 20 == 7 else False
        if bad is not False:
            if bad is None:
                del attributes[ATTR_EVENT_TS]
            else:
                attributes[ATTR_EVENT_TS] = bad
        publisher.publish(settings.topic_path, data, **attributes).result()
        sent.append((f"p-{n}", Decimal(n + 1) / 4, event))
    warehouse = str(tmp_path / "w.duckdb")
    with caplog.at_level(logging.WARNING, logger="txpipe.lab.direct_pubsub"):
        handle = _start(settings, warehouse)
        assert handle.finish(60), "the read never caught up, or the drain did not end"
    counters = handle.source_counters()
    assert counters["pulled"] == 200 and counters["event_ts_fallbacks"] == 10
    # every message counted, the poisoned ones in the windows of their payload's timestamp
    expected: dict[datetime, tuple[int, Decimal]] = {}
    for _, amount, event in sent:
        start = event - timedelta(seconds=event.timestamp() % WINDOW)
        count, total = expected.get(start, (0, Decimal(0)))
        expected[start] = (count + 1, total + amount)
    assert _windows(warehouse, settings) == expected
    assert count_dead_letters(warehouse, settings) == 0  # no dead letters
    assert pull_all(settings.subscription_path, expected=0, timeout=10) == {}  # all acknowledged
    warnings = [r for r in caplog.records if "event_ts" in r.getMessage()]
    assert len(warnings) == 1  # said once, not once per message or per pull


def test_late_data_is_counted_and_only_what_is_too_late_is_dropped(pubsub_emulator, tmp_path):
    """Data sent after the read caught up (watermark: the clock minus the band) is late if its
    event time is behind that; within the allowed lateness it still counts (a LATE pane), past
    it the runner drops it — and the read says how many of each."""
    settings = unique_settings(window_size_seconds=WINDOW)  # allowed lateness 30 s
    pubsub_emulator.ensure_resources(settings)
    warehouse = str(tmp_path / "w.duckdb")
    handle = _start(settings, warehouse)
    since = time.monotonic()
    while not handle.session.caught_up_since(since):  # idle: watermark = now - 10 s
        time.sleep(0.1)
    now = datetime.now(UTC)
    publisher = pubsub_v1.PublisherClient()
    kept = []
    for n, behind in enumerate([1] * 40 + [18] * 6 + [100] * 9):  # seconds before now
        event = now - timedelta(seconds=behind, milliseconds=10 * n)
        data, attributes = encode_message(f"late-{n}", Decimal(n + 1), event)
        publisher.publish(settings.topic_path, data, **attributes).result()
        if behind < 100:
            kept.append((f"late-{n}", Decimal(n + 1), event))
    assert handle.finish(60), "the read never caught up, or the drain did not end"
    counters = handle.source_counters()
    assert (counters["pulled"], counters["late"], counters["too_late"]) == (55, 15, 9)
    expected: dict[datetime, tuple[int, Decimal]] = {}
    for _, amount, event in kept:
        start = event - timedelta(seconds=event.timestamp() % WINDOW)
        count, total = expected.get(start, (0, Decimal(0)))
        expected[start] = (count + 1, total + amount)
    assert _windows(warehouse, settings) == expected


def _run_cli(settings, warehouse, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "PROJECT_ID": settings.project_id,
           "PUBSUB_TOPIC_ID": settings.pubsub_topic_id,
           "PUBSUB_SUBSCRIPTION_ID": settings.pubsub_subscription_id,
           "WINDOW_SIZE_SECONDS": str(WINDOW), "LOG_LEVEL": "WARNING", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "txpipe", "run", "--sink", "duckdb",
                             "--output", warehouse], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_line(stream, pattern: str, timeout: float = 60.0) -> list[str]:
    """Lines of ``stream`` up to one matching ``pattern`` (read in a thread, with a deadline)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if re.search(pattern, line):
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), "".join(lines)[-2000:]
    return lines


def _publishing(settings):
    """A live stream (stamped now, paced) published from a thread until stopped."""
    record = _Record()
    stop = threading.Event()
    cfg = SimulationConfig(seed=9, rate=150, duration=120, duplicate_rate=0.03,
                           malformed_rate=0.02, jitter_seconds=1.0, window_size=WINDOW)
    thread = threading.Thread(target=publish, args=(cfg, settings.topic_path),
                              kwargs={"truth": record, "stop_event": stop}, daemon=True)
    thread.start()
    return record, stop, thread


def _signalled_run(settings, warehouse: str, after: float, signums, timeout: float):
    """``run`` streaming from the simulator's live stream, sent ``signums`` ``after`` seconds
    of streaming: the simulator's record, the exit code, stdout and all of stderr."""
    record, stop, thread = _publishing(settings)
    proc = _run_cli(settings, warehouse)
    try:
        err = _wait_for_line(proc.stderr, r"streaming on the DirectRunner")
        time.sleep(after)
        for signum in signums:
            proc.send_signal(signum)
        out, rest = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        stop.set()
        thread.join(30)
    return record, proc.returncode, out, "".join(err) + rest


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_drains_every_pulled_transaction_into_the_warehouse(
        pubsub_emulator, tmp_path, signum):
    settings = unique_settings(window_size_seconds=WINDOW)
    pubsub_emulator.ensure_resources(settings)
    warehouse = str(tmp_path / "w.duckdb")
    # mid-stream: windows open, messages in flight
    record, returncode, out, err = _signalled_run(settings, warehouse, 4, [signum], 90)
    assert returncode == 0, err[-3000:]
    assert "draining" in err and "Traceback" not in err

    # What the run pulled: everything published but what the subscription still holds.
    remaining = Counter(data for data, _ in pull_all(settings.subscription_path, expected=0,
                                                     timeout=20).values())
    pulled = []
    for message in record.messages:
        if remaining[message.data]:
            remaining[message.data] -= 1
        else:
            pulled.append(message)
    assert not +remaining  # every message left over was one the simulator published
    assert 300 < len(pulled) < len(record.messages)  # stopped mid-stream, both sides non-empty
    counts = dict(re.findall(r"(\w+)=(\d+)", out.splitlines()[-1]))
    assert int(counts["pulled"]) == int(counts["read"]) == len(pulled)
    assert _windows(warehouse, settings) == _truth(pulled)
    malformed = sum(1 for m in pulled if m.kind.value == "malformed")
    assert int(counts["dead_lettered"]) == count_dead_letters(warehouse, settings) == malformed


@pytest.mark.subprocess
def test_a_second_signal_cancels_at_once_and_says_what_was_left(pubsub_emulator, tmp_path):
    settings = unique_settings(window_size_seconds=WINDOW)
    pubsub_emulator.ensure_resources(settings)
    # two different signals: both are delivered
    _, returncode, out, err = _signalled_run(settings, str(tmp_path / "w.duckdb"), 3,
                                             [signal.SIGTERM, signal.SIGINT], 60)
    assert returncode == 130, err[-3000:]
    assert "Traceback" not in err
    # (a restart hold keeps the watermark at its minimum: no time to say)
    left = re.search(r"cancelled(?: at once: the pipeline's watermark was at .* UTC;|:) (\d+) "
                     r"pulled message\(s\) were not written nor acknowledged", err)
    assert left, err[-2000:]
    counts = dict(re.findall(r"(\w+)=(\d+)", out))
    assert "(counted before the cancel)" in out
    assert 0 < int(left.group(1)) <= int(counts["pulled"])


def test_early_panes_with_short_windows_drain_to_the_end(pubsub_emulator, tmp_path):
    """5 s windows with an EARLY pane every 2 s, 10 s of live traffic, then a drain: the drain
    ends (Beam's DirectRunner once ended it in its stall check) and the last panes hold every
    transaction published."""
    settings = unique_settings(window_size_seconds=WINDOW, early_firing_seconds=2)
    pubsub_emulator.ensure_resources(settings)
    warehouse = str(tmp_path / "w.duckdb")
    handle = _start(settings, warehouse)
    record = _Record()
    cfg = SimulationConfig(seed=5, rate=100, duration=10, duplicate_rate=0.0,
                           malformed_rate=0.0, late_rate=0.0, jitter_seconds=0.5,
                           window_size=WINDOW)
    publish(cfg, settings.topic_path, truth=record)
    assert handle.finish(120), "the drain did not end"
    assert _windows(warehouse, settings) == _truth(record.messages)
    timings = {r["pane_timing"] for r in read_windows(warehouse, settings)}
    assert "EARLY" in timings  # early panes were written live

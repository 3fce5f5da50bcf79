"""Driving a stream into a sink: pacing on the real clock, batching, stopping cleanly.

Pacing holds message i until ``start + send_offset``, so a live consumer sees event times
close to the wall clock. When a stream is replayed from a fixed ``start`` (or rate is 0)
there is nothing to wait for and it goes as fast as the sink takes it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from simulator.config import SimulationConfig
from simulator.generator import SimMessage, generate
from simulator.sinks import LineSink, PublishTarget, SinkClosed, TargetError
from simulator.stats import PublishStats, Recorder
from simulator.truth import TruthBuilder

#: Messages handed to a sink at once when running flat out (one full Pub/Sub request).
BATCH_SIZE = 1000
#: Longest a paced message waits in a partial batch before it is sent anyway.
MAX_LATENCY = 0.05
#: How often the stats callback is invoked.
REPORT_EVERY = 0.25

StatsCallback = Callable[[PublishStats], None]


def is_live(cfg: SimulationConfig) -> bool:
    """Live streams are stamped now and paced; replays from a fixed start are not."""
    return cfg.start is None and cfg.rate > 0


def run(cfg: SimulationConfig, sink: PublishTarget, stats: PublishStats, *, paced: bool,
        stop_event: threading.Event | None = None,
        stats_callback: StatsCallback | None = None) -> PublishStats:
    """Generate ``cfg``'s stream into ``sink`` until done or ``stop_event`` is set.

    Whatever was generated is delivered or counted failed before this returns.
    """
    stop = stop_event or threading.Event()
    cfg = cfg.started()
    stats.config = cfg
    stats.started_at = t0 = time.monotonic()
    next_report = t0 + REPORT_EVERY
    batch: list[SimMessage] = []
    batch_born = t0

    def report() -> None:
        stats.tick()
        if stats_callback is not None:
            stats_callback(stats)

    try:
        for message in generate(cfg):
            if stop.is_set():
                stats.interrupted = True
                break
            if paced:
                now = time.monotonic()
                delay = t0 + message.send_offset - now
                if delay > 0.001:
                    if batch and (delay >= MAX_LATENCY or now - batch_born >= MAX_LATENCY):
                        sink.send(batch)
                        batch = []
                    sink.poll()
                    if now >= next_report:
                        next_report = now + REPORT_EVERY
                        report()
                    if stop.wait(delay):
                        stats.interrupted = True
                        break
                if not batch:
                    batch_born = time.monotonic()
            batch.append(message)
            stats.generated += 1
            if len(batch) >= BATCH_SIZE:
                sink.send(batch)
                batch = []
                sink.poll()
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + REPORT_EVERY
                    report()
    except SinkClosed:
        stats.interrupted = True
        batch = []
    finally:
        try:
            if batch:
                sink.send(batch)
        except SinkClosed:
            stats.interrupted = True
        sink.close()
        report()
    return stats


def publish(cfg: SimulationConfig, topic_path: str, stats_callback: StatsCallback | None = None,
            stop_event: threading.Event | None = None, *, truth: TruthBuilder | None = None,
            create_topic: bool = False, paced: bool | None = None, client=None,
            batching=None, retry=None) -> PublishStats:
    """Publish ``cfg``'s stream to a Pub/Sub topic; the in-process entry point of the CLI.

    ``truth``, when given, is fed every message the service acknowledged. Raises
    :class:`TargetError` when the topic is missing (unless ``create_topic``) or unreachable.
    """
    from simulator import pubsub  # the Google client is heavy; only this target needs it

    owned = client is None
    client = client or pubsub.make_client()
    try:
        pubsub.ensure_topic(client, topic_path, create=create_topic)
        stats = PublishStats(target=topic_path)
        sink = pubsub.PubSubSink(topic_path, Recorder(stats, truth), client=client,
                                 batching=batching, retry=retry)
        return run(cfg, sink, stats, paced=is_live(cfg) if paced is None else paced,
                   stop_event=stop_event, stats_callback=stats_callback)
    finally:
        if owned:  # notebooks call this repeatedly: do not leave channels to the GC
            client.transport.close()


def write(cfg: SimulationConfig, output: str | Path | BinaryIO | None = None,
          stats_callback: StatsCallback | None = None, stop_event: threading.Event | None = None,
          *, truth: TruthBuilder | None = None, paced: bool | None = None) -> PublishStats:
    """Write ``cfg``'s stream as JSON lines to a file path, a binary stream, or stdout (None).

    Files are never paced: they are replays, not live streams.
    """
    if output is None or not isinstance(output, (str, Path)):
        stream = output if output is not None else sys.stdout.buffer
        stats = PublishStats(target="stdout" if output is None else "stream")
        sink = LineSink(stream, Recorder(stats, truth), flush_each=True)
        live = is_live(cfg) if paced is None else paced
        return run(cfg, sink, stats, paced=live, stop_event=stop_event, stats_callback=stats_callback)
    path = Path(output)
    try:
        handle = path.open("wb")
    except OSError as exc:
        raise TargetError(f"cannot write {path}: {exc.strerror}") from None
    with handle:
        stats = PublishStats(target=str(path))
        sink = LineSink(handle, Recorder(stats, truth))
        return run(cfg, sink, stats, paced=bool(paced), stop_event=stop_event,
                   stats_callback=stats_callback)

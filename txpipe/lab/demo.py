"""``make demo``: the whole streaming system on one machine, checked against ground truth.

Simulator -> Pub/Sub emulator -> streaming pipeline (DirectRunner with the lab's local read,
``txpipe.lab.direct_pubsub``) -> DuckDB warehouse ``.local/warehouse.duckdb``. The simulator
sends some duplicates, bad messages and late events, and records what the service acknowledged.
When it has published (or on Ctrl+C / SIGTERM), the demo lets the pipeline read what is left in
the subscription, then drains it — every open window fires and is written — and reconciles the
warehouse with the record, window by window, to the cent:

    CONSERVATION published_valid=N counted=N dead_lettered=N duplicates_dropped=N
                 late_dropped=N lost=N

The watermark follows the data, so which late events the runner drops depends on when they
were read: the read records the watermark each late message met, and ``late_dropped`` is what
Beam's rule (window end + allowed lateness behind that watermark) says of them. The simulator
sends late events ``window + lateness + 60 s`` after their event time; once the read has caught
up they are dropped, while the pipeline is behind they may still count. ``lost`` is everything
else missing; it must be 0. A second Ctrl+C cancels at once.

Without the emulator the same pipeline reads the same stream from a TestStream in-process.

Anomaly detection runs too (txpipe.anomaly): each anomaly found prints an ``ALERT`` line as it
reaches the warehouse, and the run ends with ``ANOMALIES found=N``. ``DEMO_ANOMALIES=default``
(or a list of scenarios) has the simulator inject labelled ones; a series is scored after
``ANOMALY_WARMUP`` windows (20: ten minutes of 30 s windows), so try e.g.
``WINDOW_SIZE_SECONDS=10 ANOMALY_WARMUP=10 DEMO_SECONDS=300 DEMO_ANOMALIES=default make demo``.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from txpipe.contract import UTC
from txpipe.errors import OneLineParser, command

LATE_MARGIN_SECONDS = 60
DEFAULT_SECONDS = 90
DEFAULT_RATE = 200
#: How often the demo looks at the warehouse, to time when each window arrives.
WATCH_SECONDS = 0.25


class DemoError(RuntimeError):
    """A setting or the environment makes the demo impossible; one line for the user."""


@dataclass(frozen=True)
class DemoConfig:
    seconds: float = DEFAULT_SECONDS
    rate: float = DEFAULT_RATE
    seed: int = 42
    duplicate_rate: float = 0.02
    malformed_rate: float = 0.01
    late_rate: float = 0.01
    jitter_seconds: float = 2.0
    local_dir: Path = Path(".local")
    #: The local read's estimation band (the watermark trails the clock by it once caught up);
    #: None: the setting LOCAL_ESTIMATION_BAND_SECONDS.
    band_seconds: float | None = None
    anomalies: tuple[str, ...] = ()  # simulator scenarios to inject (DEMO_ANOMALIES)

    def simulation(self, settings):
        """The simulator's config: late events sent well after their window closed, jitter well
        inside the allowed lateness."""
        from simulator import SimulationConfig

        window, lateness = settings.window_size_seconds, settings.allowed_lateness_seconds
        jitter = min(self.jitter_seconds, lateness / 4)
        return SimulationConfig(
            seed=self.seed, rate=self.rate, duration=self.seconds,
            duplicate_rate=self.duplicate_rate, malformed_rate=self.malformed_rate,
            late_rate=self.late_rate, late_seconds=window + lateness + LATE_MARGIN_SECONDS,
            jitter_seconds=jitter, window_size=window, anomalies=self.anomalies,
            anomaly_rate=0.1, anomaly_warmup=settings.anomaly_warmup,
        )


# --- what must arrive: the simulator's record, split into kept and expected-dropped -----------


class Expectation:
    """Fed with every message the service acknowledged (the simulator's truth hook).

    ``published`` is the truth of everything sent. What the warehouse must hold leaves out the
    transactions the runner drops as too late: :meth:`kept` builds it from their ids.
    """

    def __init__(self, window_size: int):
        from simulator import TruthBuilder

        self.window_size = window_size
        self.published = TruthBuilder(window_size)
        self.messages: list = []
        self._lock = threading.Lock()

    def add_all(self, messages) -> None:
        with self._lock:
            for message in messages:
                self.published.add(message)
                self.messages.append(message)

    def kept(self, dropped: set[str] | None = None):
        """The TruthBuilder of what must be counted: every valid transaction but those whose id
        is in ``dropped`` (None: those the simulator sent late)."""
        from simulator import TruthBuilder
        from simulator.generator import MessageKind

        kept = TruthBuilder(self.window_size)
        with self._lock:
            for m in self.messages:
                gone = m.late if dropped is None else m.transaction_id in dropped
                if m.kind is MessageKind.MALFORMED or not gone:
                    kept.add(m)
        return kept


@dataclass
class WindowCheck:
    start: datetime
    end: datetime
    expected: int
    counted: int
    expected_sum: Decimal
    counted_sum: Decimal
    row: dict[str, Any] | None
    late_dropped: int

    @property
    def ok(self) -> bool:
        return self.expected == self.counted and self.expected_sum == self.counted_sum


@dataclass
class Conservation:
    published_valid: int
    counted: int
    dead_lettered: int
    duplicates_dropped: int
    late_dropped: int
    lost_valid: int
    lost_dead_letters: int = 0
    unexpected: int = 0  # counted beyond the expectation: a late event kept, or a miscount
    dead_letters_expected: int = 0
    windows: list[WindowCheck] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_valid + self.lost_dead_letters

    def line(self) -> str:
        return (f"CONSERVATION published_valid={self.published_valid} counted={self.counted} "
                f"dead_lettered={self.dead_lettered} duplicates_dropped={self.duplicates_dropped} "
                f"late_dropped={self.late_dropped} lost={self.lost}")

    @property
    def exact(self) -> bool:
        return (self.lost == 0 and self.unexpected == 0
                and self.dead_lettered == self.dead_letters_expected
                and all(w.ok for w in self.windows))


def reconcile(expect: Expectation, totals: dict[datetime, dict], dead_letters: int,
              dropped: set[str] | None = None) -> Conservation:
    """The warehouse's totals view (:func:`read_totals`) against the simulator's record,
    window by window.

    ``duplicates_dropped`` is the re-sends the record holds: every one must have been dropped,
    or its window would count more than expected (``unexpected``). ``dropped``: the ids of the
    transactions the runner dropped as too late (None: those the simulator sent late).
    """
    published = expect.published.build()
    kept_truth = expect.kept(dropped).build()
    kept = {w.start: w for w in kept_truth.windows}
    late = {w.start: w.count - (kept[w.start].count if w.start in kept else 0)
            for w in published.windows}
    got = totals
    checks = []
    lost = unexpected = 0
    for start in sorted(set(kept) | set(got) | {s for s, n in late.items() if n}):
        want = kept.get(start)
        row = got.get(start)
        expected = want.count if want else 0
        counted = int(row["total_transactions"]) if row else 0
        lost += max(0, expected - counted)
        unexpected += max(0, counted - expected)
        end = start + timedelta(seconds=published.window_size)
        checks.append(WindowCheck(
            start, end, expected, counted, want.sum if want else Decimal(0),
            Decimal(row["total_amount_sum"]) if row else Decimal(0), row, late.get(start, 0)))
    malformed = sum(published.malformed.values())
    return Conservation(
        published_valid=published.valid, counted=sum(c.counted for c in checks),
        dead_lettered=dead_letters, duplicates_dropped=published.duplicates,
        late_dropped=published.valid - kept_truth.valid, lost_valid=lost,
        lost_dead_letters=max(0, malformed - dead_letters),
        unexpected=unexpected, dead_letters_expected=malformed, windows=checks)


def latency(delays: Sequence[float]) -> tuple[float, float, float, int] | None:
    """(p50, p95, max, n) of delays in seconds (numpy's default percentiles); None if none."""
    if not delays:
        return None
    ordered = sorted(delays)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0], 1
    cuts = statistics.quantiles(ordered, n=20, method="inclusive")
    return cuts[9], cuts[18], ordered[-1], len(ordered)


# --- the warehouse ----------------------------------------------------------------------------


def _query(path: str, sql: str) -> list[dict]:
    """The rows of ``sql`` on the warehouse at ``path``; none while there is nothing to read:
    no file yet, no such table yet, or the pipeline's writer holding the file this instant
    (the next look gets them)."""
    import duckdb

    from txpipe.sinks.duckdb import connect

    if not Path(path).exists():
        return []
    try:
        con = connect(path)
    except duckdb.IOException:  # held by the writer
        return []
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    except duckdb.CatalogException:  # not written yet
        return []
    finally:
        con.close()


def read_windows(path: str, settings, columns: str = "*") -> list[dict]:
    """The window table's rows, as stored (every pane, every run)."""
    return _query(path, f'SELECT {columns} FROM "{settings.bigquery_table_id}"')


def count_dead_letters(path: str, settings) -> int:
    """How many dead letters the warehouse holds."""
    rows = _query(path, f'SELECT count(*) AS n FROM "{settings.bigquery_dead_letter_table_id}"')
    return int(rows[0]["n"]) if rows else 0


def read_totals(path: str, settings) -> dict[datetime, dict]:
    """Window start -> the warehouse's totals of that window (schema's totals view: each
    stored pane once, a run's last pane when panes accumulate, every pane when they discard),
    with its average; empty when the pipeline has not written yet."""
    from txpipe import money
    from txpipe.schema import WINDOW_STATS

    rows = _query(path, WINDOW_STATS.totals_sql(f'"{settings.bigquery_table_id}"'))
    for row in rows:
        row["avg_transaction_amount"] = money.average(row["total_amount_sum"],
                                                      row["total_transactions"])
    return {row["window_start_time"]: row for row in rows}


def read_anomalies(path: str, settings) -> list[dict]:
    """The anomaly table's rows, oldest window first; empty before the first one."""
    return _query(path, f'SELECT * FROM "{settings.bigquery_anomaly_table_id}" '
                        "ORDER BY window_start_time, dimension NULLS FIRST, metric")


class Alerts:
    """Prints one ``ALERT`` line per anomaly row, the first time it is seen."""

    def __init__(self, say: Callable[[str], None] = print):
        self.say = say
        self.seen: set[tuple] = set()

    def check(self, rows: Sequence[dict]) -> None:
        for row in rows:
            key = (row["window_start_time"], row["dimension"], row["dimension_value"],
                   row["metric"])
            if key not in self.seen:
                self.seen.add(key)
                self.say(alert_line(row))


def alert_line(row: dict) -> str:
    series = (f"{row['dimension']}={row['dimension_value']}" if row["dimension"]
              else "whole stream")
    value = Decimal(row["value"])
    shown = f"{int(value):,}" if row["metric"] == "total_transactions" else f"{value:,.2f}"
    return (f"ALERT anomaly in window {row['window_start_time']:%H:%M:%S}–"
            f"{row['window_end_time']:%H:%M:%S} UTC: {series} {row['metric']}={shown} "
            f"score {row['score']:.1f} >= {row['threshold']:g} ({row['detector']})")


def anomaly_summary(rows: Sequence[dict], published) -> str:
    """``ANOMALIES found=N``, scored against the simulator's labels when it injected any."""
    line = f"ANOMALIES found={len(rows)}"
    if published is not None and published.anomalies:
        quality = published.score_anomalies(rows)
        line += (f" injected={quality.injected} precision={quality.precision:.2f} "
                 f"recall={quality.recall:.2f}")
    return line


def fresh_warehouse(path: Path) -> None:
    """The demo's reconciliation needs a warehouse of this run only: an older one is kept aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(path.with_name(path.stem + ".previous.duckdb"))
    for leftover in (Path(f"{path}.wal"),):
        leftover.unlink(missing_ok=True)


# --- running ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    conservation: Conservation
    mode: str
    publish_summary: str
    seconds: float
    published: Any  # simulator.Truth of everything the service acknowledged: the manifest
    kept: Any  # simulator.Truth of what the warehouse must hold (too-late events left out)
    publish_stats: Any = None  # simulator.PublishStats of a live run
    #: Seconds from each window's end to its first row in the warehouse, for the windows the
    #: watermark fired (those the final drain fired are left out).
    arrivals: list[float] = field(default_factory=list)
    caught_up_after: float | None = None  # s from the end of publishing to an empty pull
    cancelled: str | None = None  # what a second Ctrl+C left unwritten
    read: dict[str, Any] = field(default_factory=dict)  # the local read's own counts


def _streaming_options():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    options.view_as(StandardOptions).runner = "DirectRunner"
    return options


class Arrivals:
    """Watches the warehouse from a thread: when each window's first row shows up."""

    def __init__(self, warehouse: str, settings, every: float = WATCH_SECONDS):
        self.warehouse, self.settings, self.every = warehouse, settings, every
        self.first_seen: dict[datetime, tuple[datetime, float]] = {}  # start -> (end, time)
        self.drain_started: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="txpipe-demo-arrivals",
                                        daemon=True)

    def start(self) -> Arrivals:
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.look()

    def look(self) -> None:
        rows = read_windows(self.warehouse, self.settings,
                            columns="DISTINCT window_start_time, window_end_time")
        now = time.time()
        for row in rows:
            self.first_seen.setdefault(row["window_start_time"], (row["window_end_time"], now))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.look()

    def latencies(self) -> list[float]:
        """Window end -> first row in the warehouse, seconds, for windows the watermark fired."""
        cut = self.drain_started if self.drain_started is not None else float("inf")
        return sorted(seen - end.timestamp() for end, seen in self.first_seen.values()
                      if seen < cut)


def run_live(cfg: DemoConfig, settings, emulator_host: str, warehouse: str,
             say: Callable[[str], None] = print,
             during: Callable[[float], None] | None = None,
             alerts: Alerts | None = None) -> RunResult:
    """Publish to the emulator while the streaming pipeline fills the warehouse; when publishing
    ends (or on Ctrl+C / SIGTERM) let the read catch up, drain, reconcile. A second signal
    cancels at once. The steps are the local-streaming driver's (:mod:`txpipe.lab.live`).

    ``during(elapsed)`` is called about once a second while publishing (tests inject faults);
    ``alerts`` prints the anomalies found as they reach the warehouse.
    """
    import apache_beam as beam

    from simulator import publish
    from txpipe.lab import live
    from txpipe.lab.direct_pubsub import LocalStreaming, expiry
    from txpipe.lab.local import PubSubEmulator  # noqa: F401 - keeps the import error early
    from txpipe.pipeline import build_pipeline
    from txpipe.resources import delete_pubsub, ensure_pubsub
    from txpipe.runners import StopSignals
    from txpipe.sinks.duckdb import DuckDBSink
    from txpipe.sources import PubSubSource
    from txpipe.windowing import WindowSpec

    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    ensure_pubsub(settings, emulator_host=emulator_host)
    sim = cfg.simulation(settings)
    expect = Expectation(settings.window_size_seconds)
    spec = WindowSpec.from_settings(settings)

    pipeline = beam.Pipeline(options=_streaming_options())
    # id_label: the DirectRunner refuses it; the pipeline's own Dedupe does that job.
    source = PubSubSource(settings.subscription_path, id_label=None)
    sink = DuckDBSink.from_settings(warehouse, settings)
    build_pipeline(pipeline, settings, source, sink,
                   dedupe=LocalStreaming().dedupe(settings.dedupe_horizon_seconds))
    band = (cfg.band_seconds if cfg.band_seconds is not None
            else settings.local_estimation_band_seconds)
    handle = live.start(pipeline, spec, band_seconds=band, keep_late=True,
                        restart_hold=False)  # its own subscription
    from txpipe.lab.dashboard import beside  # the live page and the read's progress
    page = beside(warehouse, handle, lambda: expect.published.messages, say)
    arrivals = Arrivals(warehouse, settings).start()
    started = time.monotonic()
    cancelled = None
    caught_up_after = None
    try:
        with StopSignals() as signals:

            def cancel_asked() -> bool:
                return signals.count >= 2

            publisher = handle.publish(lambda stop: publish(sim, settings.topic_path,
                                                            truth=expect, stop_event=stop))
            say(f"publishing {sim.rate:g} tx/s for {sim.duration:g} s to {settings.topic_path} "
                f"(emulator {emulator_host}); pipeline reading {settings.subscription_path}")
            next_report = time.monotonic() + 10
            while not publisher.join(0.5):
                if signals.count and not publisher.stop.is_set():
                    say("stopping: publishing ends now; the pipeline reads what is left, then "
                        "drains (Ctrl+C again to cancel at once)")
                    publisher.stop.set()
                elapsed = time.monotonic() - started
                if during is not None:
                    during(elapsed)
                if time.monotonic() >= next_report and publisher.alive():
                    next_report += 10
                    say(f"  {elapsed:5.0f} s: {expect.published.messages:,} messages acknowledged, "
                        f"{handle.session.pulled:,} read, {len(arrivals.first_seen)} windows in "
                        "the warehouse")
                    if alerts is not None and settings.anomalies:
                        alerts.check(read_anomalies(warehouse, settings))
            if publisher.error is not None:
                raise DemoError(f"the simulator failed: {publisher.error}")
            stats = publisher.result
            say(f"simulator: {stats.summary()}")
            published_at = time.monotonic()
            ended = handle.wait_caught_up(
                published_at, cancelled=cancel_asked,
                report=lambda pulled: say(f"  reading the backlog: {pulled:,} of "
                                          f"{expect.published.messages:,} messages read"))
            if ended == "cancelled":
                cancelled = handle.cancel().line()
            else:
                if ended == "stalled":
                    say(f"the read made no progress for {live.STALL_SECONDS:g} s (subscription "
                        "unreachable?): draining what it read")
                caught_up_after = time.monotonic() - published_at
                # Windows that ended while publishing fire by the watermark, which trails the
                # clock by the band once caught up; then the drain fires the last, open ones.
                handle.settle(time.time_ns() // 1000 - round(caught_up_after * 1_000_000),
                              band + 5, cancel_asked)
                say("draining: every open window fires and is written")
                arrivals.drain_started = time.time()
                left = handle.drain_and_wait(cancel_asked)
                cancelled = left.line() if left is not None else None
    finally:
        if not handle.done and cancelled is None:
            handle.cancel()
        arrivals.stop()
        if page is not None:
            page.stop()
        delete_pubsub(settings, emulator_host)  # this run's topic and subscription only
    if cancelled:
        say(cancelled)
    rule = expiry(spec)
    dropped = {b.transaction_id for b in handle.session.behind() if rule(b.event, b.watermark)}
    conservation = reconcile(expect, read_totals(warehouse, settings),
                             count_dead_letters(warehouse, settings), dropped)
    return RunResult(conservation, "live", stats.summary(), time.monotonic() - started,
                     expect.published.build(sim), expect.kept(dropped).build(sim), stats,
                     arrivals.latencies(), caught_up_after, cancelled, _read_counts(handle))


def _read_counts(handle) -> dict[str, Any]:
    """The read's counters, and the seconds from a window falling due to its acknowledgement."""
    delays = handle.session.ack_delays()
    return handle.source_counters() | {"acked": handle.progress()["acked"],
                                       "ack_delay_max": max(delays, default=0.0)}


def run_in_process(cfg: DemoConfig, settings, warehouse: str,
                   say: Callable[[str], None] = print) -> RunResult:
    """No emulator: the same pipeline on the same stream, replayed through a TestStream whose
    watermark follows the send times, as the DirectRunner's Pub/Sub read would."""
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.utils.timestamp import Timestamp

    from simulator import generate
    from txpipe.contract import ATTR_EVENT_TS
    from txpipe.pipeline import build_pipeline
    from txpipe.sinks.duckdb import DuckDBSink
    from txpipe.sources import TransformSource

    sim = cfg.simulation(settings).started()
    expect = Expectation(settings.window_size_seconds)
    messages = list(generate(sim))
    expect.add_all(messages)
    start = sim.start
    stream = TestStream()
    second = -1
    for message in messages:
        if int(message.send_offset) != second:
            second = int(message.send_offset)
            stream.advance_watermark_to(Timestamp.from_utc_datetime(start + timedelta(seconds=second)))
        stamp = Timestamp.from_rfc3339(message.attributes[ATTR_EVENT_TS])
        stream.add_elements([beam.window.TimestampedValue(message.data, stamp)])
    stream.advance_watermark_to_infinity()

    say(f"in-process: {len(messages):,} messages ({sim.rate:g} tx/s for {sim.duration:g} s of "
        "event time) through a TestStream; the watermark follows the send times")
    begun = time.monotonic()
    pipeline = beam.Pipeline(options=_streaming_options())
    sink = DuckDBSink.from_settings(warehouse, settings)
    from txpipe.lab.local_dedupe import BucketedDropDuplicates

    build_pipeline(pipeline, settings, TransformSource(stream), sink,
                   dedupe=BucketedDropDuplicates(settings.dedupe_horizon_seconds))
    result = pipeline.run()
    result.wait_until_finish()
    conservation = reconcile(expect, read_totals(warehouse, settings),
                             count_dead_letters(warehouse, settings))
    summary = f"generated {len(messages):,} messages in-process"
    return RunResult(conservation, "in-process", summary, time.monotonic() - begun,
                     expect.published.build(sim), expect.kept().build(sim))


# --- output -----------------------------------------------------------------------------------


def print_windows(conservation: Conservation, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(120, Console().width))
    table = Table(title="windows in the warehouse (totals view) vs the simulator's record",
                  title_justify="left")
    for name, justify in (("window (UTC)", "left"), ("count", "right"),
                          ("expected", "right"), ("late dropped", "right"), ("sum", "right"),
                          ("avg", "right"), ("min", "right"), ("max", "right"),
                          ("last pane", "right"), ("ok", "center")):
        table.add_column(name, justify=justify, no_wrap=True)
    for w in conservation.windows:
        row = w.row or {}
        money = [_money(row.get(k)) for k in ("total_amount_sum", "avg_transaction_amount",
                                               "min_amount", "max_amount")]
        panes = f"#{row['last_pane_index']}" if row else "-"
        table.add_row(f"{w.start:%H:%M:%S}–{w.end:%H:%M:%S}", f"{w.counted:,}", f"{w.expected:,}",
                      f"{w.late_dropped:,}", *money, panes,
                      "[green]✓[/]" if w.ok else "[red]✗[/]")
    console.print(table)


def _money(value) -> str:
    return "-" if value is None else f"{Decimal(value):,.2f}"


def draw_windows(conservation: Conservation, path: Path) -> Path | None:
    """Count and amount per window, as notebook 02 draws them; None when nothing fired."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from txpipe.lab.notebook import plot_windows

    rows = [w.row for w in conservation.windows if w.row]
    if not rows:
        return None
    table = pd.DataFrame(rows).set_index("window_start_time").sort_index()
    fig = plot_windows(table, title="txpipe demo: event-time windows in the DuckDB warehouse")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- entry point ------------------------------------------------------------------------------


def _env_number(name: str, default: float, kind=float) -> float:
    text = os.environ.get(name)
    if text in (None, ""):
        return default
    try:
        value = kind(text)
    except ValueError:
        raise DemoError(f"{name} must be a number (got {text!r})") from None
    if value <= 0:
        raise DemoError(f"{name} must be > 0 (got {text!r})")
    return value


def demo_settings(run_id: str, **overrides):
    """The project's settings with the demo's own topic and subscription (a stale backlog of
    another run must not enter this run's count) and fixed windows (what the record is in)."""
    from txpipe.config import WindowType, load_settings

    settings = load_settings(**overrides)
    if settings.allowed_lateness_seconds < 8:
        raise DemoError("ALLOWED_LATENESS_SECONDS must be >= 8 for the demo: its events are "
                        "out of order by up to 2 s and read in batches, and a smaller lateness "
                        "drops some of them as late")
    return load_settings(**{
        **overrides,
        "window_type": WindowType.FIXED,
        "pubsub_topic_id": f"{settings.pubsub_topic_id}-demo-{run_id}",
        "pubsub_subscription_id": f"{settings.pubsub_subscription_id}-demo-{run_id}",
        "pubsub_dead_letter_topic_id": f"{settings.pubsub_dead_letter_topic_id}-demo-{run_id}",
        "anomalies": True,
    })


@command("txpipe demo")
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m txpipe demo",
        description="Run simulator -> Pub/Sub emulator -> streaming pipeline -> DuckDB locally "
                    "and check the warehouse against what was sent. DEMO_SECONDS / DEMO_RATE "
                    "set the defaults of --seconds / --rate.")
    parser.add_argument("--seconds", type=float, help=f"how long to publish (default {DEFAULT_SECONDS})")
    parser.add_argument("--rate", type=float, help=f"transactions per second (default {DEFAULT_RATE})")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--in-process", action="store_true",
                        help="skip the emulator: replay the stream through a TestStream")
    args = parser.parse_args(argv)

    from txpipe.config import ConfigError
    from txpipe.lab import local

    try:
        seconds = _env_number("DEMO_SECONDS", DEFAULT_SECONDS) if args.seconds is None else args.seconds
        rate = _env_number("DEMO_RATE", DEFAULT_RATE) if args.rate is None else args.rate
        if seconds <= 0 or rate <= 0:
            raise DemoError("--seconds and --rate must be > 0")
        run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        settings = demo_settings(run_id)
    except (DemoError, ConfigError) as exc:
        print(f"txpipe demo: {exc}", file=sys.stderr)
        return 2

    from txpipe import logs

    logs.configure("WARNING")
    anomalies = tuple(filter(None, os.environ.get("DEMO_ANOMALIES", "").split(",")))
    try:
        cfg = DemoConfig(seconds=seconds, rate=rate, seed=args.seed, anomalies=anomalies)
        cfg.simulation(settings)
    except ValueError as exc:  # a scenario the simulator does not know
        print(f"txpipe demo: DEMO_ANOMALIES: {exc}", file=sys.stderr)
        return 2
    local_dir = cfg.local_dir
    warehouse = local_dir / Path(settings.warehouse_path).name
    fresh_warehouse(warehouse)
    emulator = None
    alerts = Alerts()
    try:
        if args.in_process or local.find_pubsub_launcher() is None:
            if not args.in_process:
                print(f"txpipe demo: {local.INSTALL_HINT}.")
            print("Running without Pub/Sub: the same pipeline, with the simulator in-process.")
            outcome = run_in_process(cfg, settings, str(warehouse))
        else:
            state = local.running_state(local_dir)
            if state is not None:
                host = state.emulator_host
                print(f"using the running Pub/Sub emulator (pid {state.pid}, {host})")
            else:
                emulator = local.PubSubEmulator(log_path=local_dir / "pubsub-emulator.log")
                emulator.start()
                host = emulator.emulator_host
                print(f"started the Pub/Sub emulator: pid {emulator.pid}, {host}")
            outcome = run_live(cfg, settings, host, str(warehouse), alerts=alerts)
    except KeyboardInterrupt:
        print("txpipe demo: interrupted", file=sys.stderr)
        return 130
    except (DemoError, local.EmulatorError) as exc:
        print(f"txpipe demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if emulator is not None:
            pid = emulator.pid
            emulator.stop()
            print(f"stopped the Pub/Sub emulator (pid {pid})")
    conservation = outcome.conservation
    print_windows(conservation)
    picture = draw_windows(conservation, local_dir / "windows.png")
    print(f"warehouse: {warehouse}" + (f"; picture: {picture}" if picture else ""))
    print(f"{outcome.mode} run took {outcome.seconds:.0f} s; "
          f"{conservation.dead_lettered} dead letters (expected {conservation.dead_letters_expected})"
          + ("" if not conservation.unexpected
             else f"; {conservation.unexpected} transactions counted beyond the expectation"))
    if outcome.caught_up_after is not None:
        print(f"BACKLOG caught up {outcome.caught_up_after:.1f} s after publishing ended "
              f"({outcome.publish_stats.published:,} messages published)")
    if outcome.read:
        print("READ " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in outcome.read.items()))
    figures = latency(outcome.arrivals)
    if figures:
        print(f"LATENCY window end -> warehouse p50={figures[0]:.1f}s p95={figures[1]:.1f}s "
              f"max={figures[2]:.1f}s over {figures[3]} windows fired by the watermark")
    if outcome.cancelled:
        print(f"txpipe demo: {outcome.cancelled}", file=sys.stderr)
    if settings.anomalies:
        found = read_anomalies(str(warehouse), settings)
        alerts.check(found)
        print(anomaly_summary(found, outcome.published))
    print(conservation.line())
    if outcome.cancelled:
        return 130
    return 0 if conservation.exact else 1


if __name__ == "__main__":
    sys.exit(main())

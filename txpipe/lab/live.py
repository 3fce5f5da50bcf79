"""The one local-streaming driver: the CLI's ``run``, the demo and the notebooks all stream
through it.

A local streaming run on the DirectRunner goes through the same steps wherever it starts:

1. :func:`start` — the pipeline on the lab's local Pub/Sub read (:mod:`txpipe.lab.direct_pubsub`),
   returning a :class:`LiveRun` at once;
2. :meth:`LiveRun.publish` — a publisher in a thread, beside the pipeline (the demo, notebooks);
3. :meth:`LiveRun.wait_caught_up` — the read has emptied the subscription as it stood;
4. :meth:`LiveRun.settle` / :meth:`LiveRun.drain` — windows that ended fire by the watermark,
   then the drain fires the open ones and the pipeline finishes;
5. :meth:`LiveRun.cancel` — on a second Ctrl+C / SIGTERM: stop at once, say what was left.

:meth:`LiveRun.finish` is 3 + 4 (what a notebook calls when its publisher is done) and
:meth:`LiveRun.until_stopped` the CLI's loop (first signal drains, second cancels).
:meth:`LiveRun.progress` is the read's watermark and backlog, for a dashboard.
:class:`LiveStack` is the live notebooks' emulator and Pub/Sub resources; they call the pieces
above by name.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from txpipe.lab.direct_pubsub import (
    ESTIMATION_BAND_SECONDS,
    ReadSession,
    ack_key,
    expiry,
    local_pubsub_reads,
    pipeline_watermark,
    streaming_metrics,
)

#: Catching up gives up when the read makes no progress for this long (the subscription
#: unreachable): the drain then writes what was read.
STALL_SECONDS = 30.0
POLL_SECONDS = 0.2


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Cancelled:
    """What a cancel left: the pipeline's watermark, and the messages pulled but not written.
    ``acknowledged``: whether they were (read before acknowledging after commit: lost);
    otherwise a later run on the subscription reads them again."""

    watermark: Timestamp | None
    unwritten: int
    acknowledged: bool = False

    def line(self) -> str:
        left = ("were acknowledged but not written" if self.acknowledged else
                "were not written nor acknowledged: the next run on the subscription reads them")
        if self.watermark is None:
            return f"cancelled: {self.unwritten} pulled message(s) {left}"
        at = self.watermark.to_utc_datetime().strftime("%Y-%m-%d %H:%M:%S")
        return (f"cancelled at once: the pipeline's watermark was at {at} UTC; {self.unwritten} "
                f"pulled message(s) {left}")


def start(pipeline, windows=None, band_seconds: float = ESTIMATION_BAND_SECONDS,
          keep_late: bool = False, restart_hold: bool = True, **read: Any) -> LiveRun:
    """Start ``pipeline`` (streaming, DirectRunner) on the local read; returns at once.

    ``windows`` (its WindowSpec) lets the read count what arrives too late and — when the
    pipeline writes to DuckDB — acknowledge a message only once its windows are written.
    ``restart_hold``: the subscription may hold a killed run's leased messages, so the
    watermark waits for them (False for a subscription made for this run). ``read``: other
    :class:`ReadSession` settings."""
    from txpipe.sinks import duckdb

    paths = _duckdb_paths(pipeline)
    after_commit = windows is not None and bool(paths)
    for path in paths:
        duckdb.forget_uncommitted(path)
    session = ReadSession(band_seconds=band_seconds,
                          dropped=expiry(windows) if windows is not None else None,
                          keep_late=keep_late,
                          ack_after=ack_key(windows) if after_commit else None,
                          uncommitted=(lambda: sum(duckdb.uncommitted(p) for p in paths))
                          if after_commit else None,
                          restart_hold=restart_hold and after_commit, **read)
    if after_commit and _acknowledges_on_commit(pipeline, windows):
        session.on_commit = True
        duckdb.COMMIT_LISTENERS.append(session.committed)
    metrics = streaming_metrics()
    metrics.__enter__()
    try:
        with local_pubsub_reads(session):
            result = pipeline.run()
    except BaseException:
        metrics.__exit__(None, None, None)
        raise
    return LiveRun(result, session, metrics)


def _acknowledges_on_commit(pipeline, windows) -> bool:
    """Fixed windows written to one DuckDB table of window rows (no per-dimension table, whose
    rows for the window might still be in flight)."""
    from txpipe.config import WindowType
    from txpipe.schema import DIMENSION_STATS

    return windows.kind is WindowType.FIXED and not _duckdb_paths(
        pipeline, lambda node: node.transform.table == DIMENSION_STATS)


def _duckdb_paths(pipeline, which=None) -> set[str]:
    """The DuckDB warehouse files the pipeline writes (whose commits the read can see)."""
    from apache_beam.pipeline import PipelineVisitor

    from txpipe.sinks.duckdb import WriteDuckDB

    found = []

    class _Find(PipelineVisitor):
        def enter_composite_transform(self, node) -> None:
            if isinstance(node.transform, WriteDuckDB) and (which is None or which(node)):
                found.append(node.transform.sink.path)

    pipeline.visit(_Find())
    return set(found)


def _stop_listening(session: ReadSession) -> None:
    from txpipe.sinks import duckdb

    with contextlib.suppress(ValueError):
        duckdb.COMMIT_LISTENERS.remove(session.committed)


class Publishing:
    """A publisher running in a thread beside the pipeline: ``target(stop_event)``'s result is
    :attr:`result`, its exception :attr:`error`."""

    def __init__(self, target: Callable[[threading.Event], Any], name: str = "txpipe-publisher"):
        self.stop = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, args=(target,), name=name, daemon=True)
        self.thread.start()

    def _work(self, target) -> None:
        try:
            self.result = target(self.stop)
        except Exception as exc:  # the caller reports it with what was sent
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


class LiveRun:
    """A streaming pipeline running on the DirectRunner with the local Pub/Sub read.

    Waiting happens in a helper thread, so the caller's thread stays free to take Ctrl+C. When
    the pipeline finishes (drained), the read acknowledges what it still held.
    """

    def __init__(self, result, session: ReadSession, metrics=None):
        self.result = result
        self.session = session
        self._metrics = metrics
        self._done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._wait, name="txpipe-local-run", daemon=True).start()

    def _wait(self) -> None:
        try:
            self.result.wait_until_finish()
            self.session.finished()  # drained: what is still held was written
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = exc
        finally:
            if self._metrics is not None:
                self._metrics.__exit__(None, None, None)
            _stop_listening(self.session)
            self._done.set()

    # --- the pieces -------------------------------------------------------------------------

    def publish(self, target: Callable[[threading.Event], Any]) -> Publishing:
        """Run ``target(stop_event)`` in a thread beside the pipeline (a publisher)."""
        return Publishing(target)

    def wait_caught_up(self, since: float | None = None, timeout: float | None = None,
                       cancelled: Callable[[], bool] = _never,
                       report: Callable[[int], None] | None = None,
                       stall_seconds: float = STALL_SECONDS) -> str:
        """Wait until the read finds the subscription empty after ``since`` (time.monotonic(),
        default now). Returns ``caught_up``, ``done`` (the pipeline ended), ``stalled`` (no
        progress for ``stall_seconds``), ``cancelled`` or ``timeout``. ``report(pulled)`` is
        called every 10 s."""
        since = time.monotonic() if since is None else since
        deadline = None if timeout is None else time.monotonic() + timeout
        session = self.session
        progress = (session.pulled + session.acked(), time.monotonic())
        next_report = time.monotonic() + 10
        while not session.caught_up_since(since):
            if cancelled():
                return "cancelled"
            if self.done:
                self.wait(0)  # raises the pipeline's error
                return "done"
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return "timeout"
            moved = session.pulled + session.acked()  # a pause to acknowledge is progress
            if moved != progress[0]:
                progress = (moved, now)
            elif now - progress[1] > stall_seconds:
                return "stalled"
            if report is not None and now >= next_report:
                next_report += 10
                report(session.pulled)
            time.sleep(POLL_SECONDS)
        return "caught_up"

    def settle(self, until_micros: int, timeout: float,
               cancelled: Callable[[], bool] = _never) -> bool:
        """Wait until the read's watermark passes ``until_micros`` (the windows that ended by
        then fire by the watermark, not by the drain); False on timeout or cancel."""
        deadline = time.monotonic() + timeout
        while self.session.watermark() < until_micros:
            if cancelled() or self.done or time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def drain(self) -> None:
        """Stop pulling, fire every open window, write it, finish (returns at once)."""
        self.session.draining.set()

    def drain_and_wait(self, cancelled: Callable[[], bool] = _never,
                       timeout: float | None = None) -> Cancelled | None:
        """Drain and wait for the end; cancels (and returns what it left) when ``cancelled()``
        turns true or ``timeout`` passes."""
        self.drain()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.wait(POLL_SECONDS):
            if cancelled() or (deadline is not None and time.monotonic() > deadline):
                return self.cancel()
        return None

    def cancel(self) -> Cancelled:
        """Stop at once; say what was pulled but not written."""
        watermark = self.pipeline_watermark()
        self.result.cancel()
        if self.session.ack_after is not None:
            return Cancelled(watermark, self.session.held())
        if watermark is None:
            return Cancelled(None, self.session.pulled, acknowledged=True)
        return Cancelled(watermark, self.session.pulled_since(watermark.micros), True)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the pipeline has finished (raising its error if it failed)."""
        if not self._done.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    # --- the usual sequences ----------------------------------------------------------------

    def finish(self, timeout: float = 120.0) -> bool:
        """Let the read empty the subscription as it stands now, then drain and wait for the
        end — what a notebook does when its publisher is done. False if not done in time."""
        deadline = time.monotonic() + timeout
        ended = self.wait_caught_up(timeout=timeout)
        if ended == "timeout":
            return False
        left = max(0.0, deadline - time.monotonic())
        self.drain()
        return self.wait(left)

    def until_stopped(self, say: Callable[[str], None]) -> tuple[str, str | None]:
        """The CLI's loop: run until the pipeline ends; the first Ctrl+C / SIGTERM drains, a
        second cancels. Returns (``done`` | ``drained`` | ``cancelled``, what a cancel left)."""
        from txpipe.runners import StopSignals

        with StopSignals() as signals:
            say("streaming on the DirectRunner; Ctrl+C or SIGTERM drains (every open window "
                "fires and is written), a second one cancels")
            while not self.wait(POLL_SECONDS):
                if signals.count == 1 and not self.draining:
                    say("draining: reading stopped; every open window fires and is written "
                        "(Ctrl+C again to cancel at once)")
                    self.drain()
                elif signals.count >= 2:
                    return "cancelled", self.cancel().line()
        return ("drained" if self.draining else "done"), None

    # --- what it shows ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def draining(self) -> bool:
        return self.session.draining.is_set()

    def pipeline_watermark(self) -> Timestamp | None:
        """The lowest output watermark of the pipeline's steps (None before any advanced)."""
        lowest = pipeline_watermark(self.result)
        return None if lowest is None or lowest <= MIN_TIMESTAMP else lowest

    def progress(self) -> dict[str, Any]:
        """The read as it stands, for a dashboard: ``watermark`` (µs, the read's), ``pulled``,
        ``late``, ``held`` (pulled, not yet written nor acknowledged), ``acked``, ``holding``
        (a restart's watermark hold), ``caught_up_at`` (time.monotonic() of the last empty
        pull), ``draining``, ``done``."""
        return self.session.progress() | {"draining": self.draining, "done": self.done}

    def source_counters(self) -> dict[str, int]:
        """What the read counted itself: messages ``pulled``; ``late`` ones (pulled behind the
        watermark) and of those ``too_late`` (after their window's allowed lateness: dropped by
        the runner, unless a duplicate or a dead letter anyway); ``event_ts_fallbacks``, read
        at their publish time for want of a usable event_ts attribute."""
        reads = self.session.reads.values()
        if not reads:
            return {}  # no Pub/Sub read in this pipeline
        counters = {"pulled": sum(r.pulled for r in reads), "late": sum(r.late for r in reads)}
        if self.session.dropped is not None:
            counters["too_late"] = sum(r.too_late for r in reads)
        counters["event_ts_fallbacks"] = sum(r.fallbacks for r in reads)
        return counters


# --- the notebooks' live stack -----------------------------------------------------------------


class LiveStack:
    """The Pub/Sub emulator for the live notebooks, and the topics and subscriptions they use.

    :meth:`connect` uses the emulator ``PUBSUB_EMULATOR_HOST`` names when it answers; else it
    starts one on a free port through :class:`txpipe.lab.local.PubSubEmulator` (stopped, by PID,
    in :meth:`stop`); when neither is possible, or ``TXPIPE_NOTEBOOK_EMULATOR=off`` is set,
    :attr:`available` is False and :attr:`status` says why, so the notebook's cells can skip
    cleanly. The notebooks start their jobs with :func:`start` and call the rest of the driver
    by name, as ``python -m txpipe run`` and the demo do.
    """

    def __init__(self) -> None:
        self.emulator = None
        self.host: str | None = None
        self.status = ""
        self._previous_env: str | None = None

    @property
    def available(self) -> bool:
        return self.host is not None

    @classmethod
    def connect(cls) -> LiveStack:
        from txpipe.lab.local import EmulatorError, PubSubEmulator

        stack = cls()
        if os.environ.get("TXPIPE_NOTEBOOK_EMULATOR", "").lower() == "off":
            # How the notebooks are tested as a machine without Java or gcloud runs them.
            stack.status = "no Pub/Sub emulator: TXPIPE_NOTEBOOK_EMULATOR=off"
            return stack
        stack._previous_env = os.environ.get("PUBSUB_EMULATOR_HOST")
        host = stack._previous_env
        if host and _answers(host):
            stack.host = host
            stack.status = "using the running Pub/Sub emulator (PUBSUB_EMULATOR_HOST)"
            return stack
        try:
            stack.emulator = PubSubEmulator().start()
        except EmulatorError as exc:
            stack.status = f"no Pub/Sub emulator: {exc}"
            return stack
        # Started with a session of its own, it would outlive a kernel that dies mid-notebook.
        atexit.register(stack.stop)
        stack.host = stack.emulator.emulator_host
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.host
        stack.status = "started a Pub/Sub emulator for this notebook (stopped at the end)"
        return stack

    def resources(self, name: str, subscriptions: Sequence[str], **overrides: Any):
        """A topic of this run's own and one subscription per reader; returns their Settings
        (``overrides``: other settings, e.g. ``window_size_seconds``)."""
        import uuid

        from txpipe.config import load_settings
        from txpipe.resources import ensure_pubsub

        tag = uuid.uuid4().hex[:8]
        made = []
        for sub in subscriptions:
            settings = load_settings(
                env_file=None, pubsub_topic_id=f"{name}-{tag}",
                pubsub_subscription_id=f"{name}-{tag}-{sub}",
                pubsub_dead_letter_topic_id=f"{name}-{tag}-dead", **overrides)
            ensure_pubsub(settings, emulator_host=self.host)
            made.append(settings)
        return made

    def stop(self) -> str:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
            if self._previous_env is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = self._previous_env
            return "stopped the emulator this notebook started"
        return "nothing to stop" if not self.available else "left the running emulator alone"


def _answers(host: str) -> bool:
    from txpipe.lab.local import _http_answers

    return _http_answers(f"http://{host}/")

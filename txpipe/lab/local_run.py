"""A local streaming run on the DirectRunner: drain it, cancel it, and count right.

:class:`LocalRun` is what :meth:`txpipe.lab.direct_pubsub.LocalStreaming.run` returns (the
runtime's :class:`txpipe.runners.LocalRun`): ``drain()`` asks the local Pub/Sub read to stop
and fire every open window, ``wait()`` waits without tying up the caller's thread (which stays
free for Ctrl+C), ``cancel()`` stops at once and says what was pulled but not written.
:func:`fix_streaming_metrics` makes the streaming DirectRunner's counters count every bundle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

if TYPE_CHECKING:
    from txpipe.lab.direct_pubsub import ReadSession


@dataclass(frozen=True)
class Cancelled:
    """What a cancel left: the pipeline's watermark, and the pulled (acknowledged) messages with
    later event times, which were in windows that had not fired — not written."""

    watermark: Timestamp | None
    unwritten: int

    def line(self) -> str:
        if self.watermark is None:
            return f"cancelled: {self.unwritten} pulled message(s) were not written"
        at = self.watermark.to_utc_datetime().strftime("%Y-%m-%d %H:%M:%S")
        return (f"cancelled at once: the pipeline's watermark was at {at} UTC; {self.unwritten} "
                "pulled message(s) with later event times (and any older ones in windows still "
                "open) were acknowledged but not written")


class LocalRun:
    """A streaming pipeline running on the DirectRunner with the local Pub/Sub read.

    :meth:`wait` waits in a helper thread, so the caller's thread stays free to take Ctrl+C.
    """

    def __init__(self, result, session: ReadSession):
        self.result = result
        self.session = session
        self._done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._wait, name="txpipe-local-run", daemon=True).start()

    def _wait(self) -> None:
        try:
            self.result.wait_until_finish()
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def draining(self) -> bool:
        return self.session.draining.is_set()

    def drain(self) -> None:
        """Stop pulling, fire every open window, write it, finish (returns at once)."""
        self.session.draining.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the pipeline has finished (raising its error if it failed)."""
        if not self._done.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    def finish(self, timeout: float = 120.0) -> bool:
        """Let the read empty the subscription as it stands now, then drain and wait for the
        end — what a notebook does when its publisher is done. False if not done in time."""
        since = time.monotonic()
        deadline = since + timeout
        while not (self.session.caught_up_since(since) or self.done):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        self.drain()
        return self.wait(max(0.0, deadline - time.monotonic()))

    def cancel(self) -> Cancelled:
        """Stop at once; say what was pulled but not written."""
        watermark = self.pipeline_watermark()
        self.result.cancel()
        if watermark is None:
            return Cancelled(None, self.session.pulled)
        unwritten = sum(r.pulled_since(watermark.micros) for r in self.session.reads.values())
        return Cancelled(watermark, unwritten)

    def pipeline_watermark(self) -> Timestamp | None:
        """The lowest output watermark of the pipeline's steps (None before any advanced)."""
        try:
            manager = self.result._evaluation_context._watermark_manager
            lowest = min(tw.output_watermark for tw in manager._transform_to_watermarks.values())
        except (AttributeError, ValueError):
            return None
        return None if lowest <= MIN_TIMESTAMP else lowest

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


_metrics_lock = threading.Lock()
_metrics_fixed = False


def fix_streaming_metrics() -> None:
    """Make the streaming DirectRunner commit every bundle's metrics (Beam 2.77).

    Its executor creates a metrics container per bundle, but each worker thread's state sampler
    caches the scoped state of a step's first bundle, with that bundle's container: every later
    update lands in a container already committed, and counters undercount. Pointing the cached
    container at the current bundle's cells makes each bundle commit its own updates.
    """
    from apache_beam.runners.worker import statesampler

    global _metrics_fixed
    with _metrics_lock:
        if _metrics_fixed:
            return
        original = statesampler.StateSampler.scoped_state

        def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
            state = original(self, name_context, state_name, io_target, metrics_container)
            cached = state.metrics_container
            if metrics_container is not None and cached is not None and cached is not metrics_container:
                cached.metrics = metrics_container.metrics
            return state

        statesampler.StateSampler.scoped_state = scoped_state
        _metrics_fixed = True

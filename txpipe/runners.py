"""Running a pipeline: Beam's runner, plus — for local streaming on the DirectRunner — the
adaptation the lab plugs in.

Beam's DirectRunner reads Pub/Sub ten messages per bundle, blocking on an empty subscription,
with a wall-clock watermark, and has no drain: not fit for local streaming. The lab package
provides a better local read, a dedupe without per-id timers and a drain, but the runtime (what
Dataflow workers install) never imports the lab: it finds the adaptation through the
``txpipe.local_runner`` entry point, and without one runs Beam's read as it is.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("txpipe.runners")

ENTRY_POINT_GROUP = "txpipe.local_runner"
LOCAL_RUNNERS = (None, "DirectRunner", "direct")


@runtime_checkable
class LocalRun(Protocol):
    """A running local streaming pipeline that can be drained (as ``gcloud dataflow jobs
    drain``: stop reading, fire and write every open window, finish) or cancelled at once."""

    result: Any  # the PipelineResult

    def drain(self) -> None:
        """Ask for a drain; returns at once."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """True once the pipeline finished (raising its error if it failed)."""
        ...

    def cancel(self) -> Any:
        """Stop at once; the returned object's ``line()`` says what was left unwritten."""
        ...

    def until_stopped(self, say: Any) -> tuple[str, str | None]:
        """Run until the end; the first signal drains, a second cancels: (how it ended, what
        a cancel left)."""
        ...

    def source_counters(self) -> dict[str, int]:
        """What the read counted itself (e.g. messages pulled)."""
        ...


@runtime_checkable
class LocalRunner(Protocol):
    """What the lab's adaptation offers: its Dedupe, and how it runs."""

    def dedupe(self, horizon_seconds: int) -> Any:
        """A Dedupe transform for this runner (None: the runtime's DropDuplicates)."""
        ...

    def run(self, pipeline: Any, windows: Any = None) -> LocalRun:
        """Start ``pipeline`` (its windowing: ``windows``, a WindowSpec); returns at once with a
        handle to drain, wait for or cancel it."""
        ...


def local_runner() -> LocalRunner | None:
    """The adaptation registered under the entry point, if the lab is installed."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            adapter = entry.load()
        except ImportError as exc:  # registered but its dependencies are missing
            log.debug("local runner %s unavailable: %s", entry.name, exc)
            continue
        return adapter() if isinstance(adapter, type) else adapter
    return None


def for_run(runner: str | None, source: Any) -> LocalRunner | None:
    """The local adaptation a run on ``runner`` reading ``source`` should use, if any."""
    return local_runner() if runner in LOCAL_RUNNERS else None


class StopSignals:
    """Counts SIGINT (Ctrl+C) and SIGTERM while a run waits: callers drain on the first and
    cancel on the second. With ``interrupt=True`` a signal raises KeyboardInterrupt instead, for
    runs that cannot drain. Handlers are installed only in the main thread (elsewhere nothing
    is counted) and restored on exit."""

    def __init__(self, interrupt: bool = False):
        self.interrupt = interrupt
        self.count = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.interrupt:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

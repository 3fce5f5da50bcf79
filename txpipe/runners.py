"""Running a pipeline: Beam's runner, plus — for local streaming on the DirectRunner — the
adaptation the lab plugs in.

Beam's DirectRunner reads Pub/Sub ten messages per bundle, blocking on an empty subscription,
with a wall-clock watermark: not fit for local streaming. The lab package provides a better
local read, but the runtime (what Dataflow workers install) never imports the lab: it finds
the adaptation through the ``txpipe.local_runner`` entry point, and without one runs Beam's
read as it is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("txpipe.runners")

ENTRY_POINT_GROUP = "txpipe.local_runner"
LOCAL_RUNNERS = (None, "DirectRunner", "direct")


@runtime_checkable
class LocalRunner(Protocol):
    """What the lab's adaptation offers: whether it applies, and a context in which pipelines
    run with it."""

    def applies(self, runner: str | None, source: Any) -> bool: ...

    def installed(self) -> contextlib.AbstractContextManager: ...

    def dedupe(self, horizon_seconds: int) -> Any:
        """A Dedupe transform for this runner (None: the runtime's DropDuplicates)."""
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
    adapter = local_runner() if runner in LOCAL_RUNNERS else None
    if adapter is None or not adapter.applies(runner, source):
        return None
    return adapter


@contextlib.contextmanager
def installed(adapter: LocalRunner | None) -> Iterator[None]:
    """Pipelines started inside run with ``adapter`` (nothing changes when it is None)."""
    if adapter is None:
        yield
        return
    with adapter.installed():
        yield

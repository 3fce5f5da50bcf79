"""A streaming run's progress where a page beside it can read it: a small JSON file next to the
warehouse (``warehouse.duckdb`` -> ``warehouse.progress.json``), rewritten about once a second.

The warehouse holds what the pipeline wrote; how far the read has got (its watermark, what it
pulled, the backlog still in the subscription) lives only in the running process. A file
rather than a table: a reader of the warehouse file would make its one writer wait, while this
file is replaced atomically (written aside, then renamed), so a reader sees the last record
whole or the one before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: How often :class:`ProgressRecorder` writes.
EVERY_SECONDS = 1.0


def progress_path(warehouse: str | os.PathLike) -> Path:
    path = Path(warehouse)
    return path.with_name(path.stem + ".progress.json")


@dataclass(frozen=True)
class Progress:
    recorded_at: float  # epoch seconds
    watermark: float | None  # the read's watermark, epoch seconds (None before the first pull)
    pulled: int  # messages the read pulled
    published: int | None = None  # messages the publisher had acknowledged, when known
    late: int = 0  # pulled behind the watermark
    draining: bool = False

    @property
    def backlog(self) -> int | None:
        """Messages published and not yet read (None when the publisher is not known)."""
        return None if self.published is None else max(0, self.published - self.pulled)

    @property
    def lag(self) -> float | None:
        """Seconds the watermark trails the clock at the time of the record."""
        return None if self.watermark is None else self.recorded_at - self.watermark

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "backlog": self.backlog, "lag": self.lag}


def write(warehouse: str | os.PathLike, progress: Progress) -> None:
    path = progress_path(warehouse)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text(json.dumps(progress.to_json()), encoding="utf-8")
    os.replace(aside, path)


def read(warehouse: str | os.PathLike) -> Progress | None:
    """The last record, or None when the run records none (a replay, another runner)."""
    try:
        data = json.loads(progress_path(warehouse).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fields = Progress.__dataclass_fields__
    return Progress(**{k: v for k, v in data.items() if k in fields})


def of_run(run, published: Callable[[], int] | None = None) -> Progress:
    """A record of a local streaming run: ``run.progress()`` of a ``txpipe.lab.live.LiveRun``
    (or of its read session) — the read's ``watermark`` in µs, ``pulled``, ``late``,
    ``draining``."""
    from apache_beam.utils.timestamp import MIN_TIMESTAMP

    now = run.progress()
    micros = now["watermark"]
    return Progress(
        recorded_at=time.time(),
        watermark=None if micros <= MIN_TIMESTAMP.micros else micros / 1e6,
        pulled=now["pulled"],
        published=None if published is None else published(),
        late=now.get("late", 0),
        draining=bool(now.get("draining", False)),
    )


class ProgressRecorder:
    """Writes ``sample()`` beside the warehouse every ``every`` seconds, from a daemon thread,
    until :meth:`stop` (which writes a last record)."""

    def __init__(self, warehouse: str | os.PathLike, sample: Callable[[], Progress],
                 every: float = EVERY_SECONDS):
        self.warehouse, self.sample, self.every = warehouse, sample, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="txpipe-progress", daemon=True)

    def start(self) -> ProgressRecorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.record()
            if self._stop.wait(self.every):
                return

    def record(self) -> None:
        with contextlib.suppress(OSError):  # the folder went away: the run is cleaned up
            write(self.warehouse, self.sample())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.record()


def follow(warehouse: str | os.PathLike, run,
           published: Callable[[], int] | None = None) -> ProgressRecorder:
    """Record the progress of ``run`` (see :func:`of_run`) beside ``warehouse`` until stopped."""
    return ProgressRecorder(warehouse, lambda: of_run(run, published)).start()

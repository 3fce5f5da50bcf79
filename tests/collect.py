"""What a pipeline output, for the test to read after the run: the one collector of tests.

``out = Outputs()``, then ``pcoll | "KeepRows" >> out.keep("rows")`` in the pipeline, then
``out["rows"]`` after ``run()``. The runners tests use run DoFns in this process, and this
module's DoFn is pickled by reference (a function of a test module run as ``__main__`` would
be pickled by value, appending to a copy), so the elements land in this module's store.
"""

from __future__ import annotations

import threading
import uuid
import weakref

import apache_beam as beam

_STORE: dict[str, list] = {}
_LOCK = threading.Lock()


class _Keep(beam.DoFn):
    def __init__(self, key: str, window: bool, timestamp: bool):
        self.key, self.window, self.timestamp = key, window, timestamp

    def process(self, element, ts=beam.DoFn.TimestampParam, win=beam.DoFn.WindowParam):
        kept = (element, *((ts,) if self.timestamp else ()), *((win,) if self.window else ()))
        with _LOCK:
            _STORE.setdefault(self.key, []).append(kept if len(kept) > 1 else element)


class Outputs:
    """The elements of one pipeline's outputs, by name, in the order they arrived."""

    def __init__(self) -> None:
        self._id = uuid.uuid4().hex
        weakref.finalize(self, _forget, self._id)

    def keep(self, name: str, *, timestamp: bool = False, window: bool = False) -> beam.ParDo:
        """A sink keeping each element, as ``(element, timestamp, window)`` if asked for."""
        return beam.ParDo(_Keep(f"{self._id}/{name}", window, timestamp))

    def __getitem__(self, name: str) -> list:
        with _LOCK:
            return list(_STORE.get(f"{self._id}/{name}", []))


def _forget(run: str) -> None:
    with _LOCK:
        for key in [k for k in _STORE if k.startswith(f"{run}/")]:
            del _STORE[key]

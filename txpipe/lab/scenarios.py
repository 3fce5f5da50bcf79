""":class:`Bucket`, which brings a local run's rows back to the notebook (``ib.collect``
cannot run a TestStream): the notebooks write their TestStreams and pipelines in their cells.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Bucket:
    """Rows a pipeline on a local runner hands back to the notebook — the only boilerplate a
    DirectRunner run needs, since ``ib.collect`` cannot run a TestStream.

    ``pcoll | "Keep" >> bucket.keep()`` in the pipeline, then ``bucket.frame()`` after the run.
    Works because this module's functions are pickled by reference: the rows land here.
    """

    name: str
    key: int = field(default_factory=lambda: next(_RUN_IDS))

    def keep(self):
        import apache_beam as beam

        return beam.Map(_keep, self.key)

    def add(self, row) -> None:
        """Keep ``row`` from inside a ``DoFn`` of the pipeline (``keep()`` without a step of its
        own: on the DirectRunner every step costs per bundle)."""
        _keep(row, self.key)

    def rows(self) -> list:
        with _RESULTS_LOCK:
            return list(_RESULTS.get(self.key, []))

    def frame(self, sort: tuple[str, ...] = ("window_start_time",)) -> pd.DataFrame:
        """The rows as a DataFrame, sorted by the ``sort`` columns it has (else as they came)."""
        frame = pd.DataFrame(self.rows())
        columns = [c for c in sort if c in frame]
        return frame.sort_values(columns).reset_index(drop=True) if columns else frame


_RESULTS: dict[int, list[dict]] = defaultdict(list)
_RUN_IDS = itertools.count()
_RESULTS_LOCK = threading.Lock()


def _keep(row: dict, run_id: int) -> None:
    with _RESULTS_LOCK:
        _RESULTS[run_id].append(row)

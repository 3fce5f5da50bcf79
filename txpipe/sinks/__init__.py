"""Where rows go. Every sink writes the window rows, the per-dimension rows, the dead
letters and the anomalies, each to a destination of its own, from the one schema in
:mod:`txpipe.schema`, under the run's identity (:mod:`txpipe.sinks.identity`).

Each sink's module is loaded when its class is first asked for (``txpipe.sinks.DuckDBSink``):
a run loads only its own sink — a replay into files neither BigQuery's writers nor DuckDB's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from txpipe.sinks.identity import IdentifyDeadLetters, RunIdentity

if TYPE_CHECKING:
    import apache_beam as beam

    from txpipe.sinks.bigquery import BigQuerySink
    from txpipe.sinks.duckdb import DuckDBSink
    from txpipe.sinks.jsonl import JsonlSink

#: Each sink class, and the module that defines it (loaded on first use).
_SINKS = {"BigQuerySink": "txpipe.sinks.bigquery", "DuckDBSink": "txpipe.sinks.duckdb",
          "JsonlSink": "txpipe.sinks.jsonl"}


def __getattr__(name: str):
    if name in _SINKS:
        return getattr(importlib.import_module(_SINKS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class Sink(Protocol):
    """Where rows go: one writing transform per output table (txpipe.schema).

    Each transform stamps the run on the rows it writes. Applied, it returns the rows the
    destination refused, as dead letters (reason ``bigquery_rejected``), or None when it
    refuses none (a refusal there fails the run instead of passing unnoticed)."""

    def windows(self, run: RunIdentity) -> beam.PTransform: ...

    def dimension_stats(self, run: RunIdentity) -> beam.PTransform: ...

    def dead_letters(self, run: RunIdentity) -> beam.PTransform: ...

    def anomalies(self, run: RunIdentity) -> beam.PTransform: ...


__all__ = ["BigQuerySink", "DuckDBSink", "IdentifyDeadLetters", "JsonlSink", "RunIdentity",
           "Sink"]

"""Where rows go. Every sink writes the window rows, the per-dimension rows, the dead
letters and the anomalies, each to a destination of its own, from the one schema in :mod:`txpipe.schema`, under
the run's identity (:mod:`txpipe.sinks.identity`)."""

from typing import Protocol, runtime_checkable

import apache_beam as beam

from txpipe.sinks.bigquery import BigQuerySink
from txpipe.sinks.duckdb import DuckDBSink
from txpipe.sinks.identity import IdentifyDeadLetters, RunIdentity
from txpipe.sinks.jsonl import JsonlSink


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

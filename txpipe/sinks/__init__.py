"""Where rows go. Every sink writes the window rows, the per-dimension rows, the dead letters
and the anomalies, each to a destination of its own, from the one schema in
:mod:`txpipe.schema`."""

from typing import Protocol, runtime_checkable

import apache_beam as beam

from txpipe.sinks.bigquery import BigQuerySink
from txpipe.sinks.duckdb import DuckDBSink
from txpipe.sinks.jsonl import JsonlSink


@runtime_checkable
class Sink(Protocol):
    """Where rows go: one writing transform per output table (txpipe.schema)."""

    def windows(self) -> beam.PTransform: ...

    def dimension_stats(self) -> beam.PTransform: ...

    def dead_letters(self) -> beam.PTransform: ...

    def anomalies(self) -> beam.PTransform: ...


__all__ = ["BigQuerySink", "DuckDBSink", "JsonlSink", "Sink"]

"""Where rows go. Every sink writes the window rows, the per-dimension rows and the dead
letters, each to a destination of its own, from the one schema in :mod:`txpipe.schema`."""

from txpipe.sinks.bigquery import BigQuerySink
from txpipe.sinks.duckdb import DuckDBSink
from txpipe.sinks.jsonl import JsonlSink

__all__ = ["BigQuerySink", "DuckDBSink", "JsonlSink"]

"""JSON Lines files: one object per window pane, money as exact decimal strings."""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import window

from txpipe.schema import ANOMALIES, DEAD_LETTERS, DIMENSION_STATS, WINDOW_STATS, Table


class WriteJsonl(beam.PTransform):
    """Rows -> files named PREFIX-*.jsonl.

    A replay writes one set of shards for the whole run; a streaming run writes a file per
    minute of event time, as unbounded output must be cut somewhere. Each table has its own
    suffix: Beam replaces the files matching ``PREFIX-*-of-N<suffix>`` of a previous run, and
    the suffix keeps that from reaching another table's files under a similar prefix.
    """

    def __init__(self, prefix: str, table: Table, streaming: bool, suffix: str = ".jsonl"):
        super().__init__()
        self.prefix, self.table, self.streaming, self.suffix = prefix, table, streaming, suffix

    def expand(self, rows):
        lines = rows | "ToJson" >> beam.Map(self.table.to_jsonl)
        if not self.streaming:
            return (
                lines
                | "OneGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
                | "WriteText" >> beam.io.WriteToText(self.prefix, file_name_suffix=self.suffix)
            )
        directory, name = os.path.split(os.path.abspath(self.prefix))
        return (
            lines
            | "PerMinute" >> beam.WindowInto(window.FixedWindows(60))
            | "WriteFiles" >> fileio.WriteToFiles(
                path=directory,
                file_naming=fileio.default_file_naming(prefix=name, suffix=self.suffix),
                shards=1,
            )
        )


@dataclass(frozen=True)
class JsonlSink:
    output: str
    dead_letter_output: str
    dimension_output: str | None = None
    streaming: bool = False
    anomaly_output: str | None = None

    def windows(self) -> beam.PTransform:
        return WriteJsonl(self.output, WINDOW_STATS, self.streaming)

    def dimension_stats(self) -> beam.PTransform:
        return WriteJsonl(self.dimension_output or f"{self.output}-by-dimension",
                          DIMENSION_STATS, self.streaming, ".by-dimension.jsonl")

    def dead_letters(self) -> beam.PTransform:
        return WriteJsonl(self.dead_letter_output, DEAD_LETTERS, self.streaming,
                          ".dead-letters.jsonl")

    def anomalies(self) -> beam.PTransform:
        return WriteJsonl(self.anomaly_output or f"{self.output}-anomalies", ANOMALIES,
                          self.streaming, ".anomalies.jsonl")

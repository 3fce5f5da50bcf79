"""The pipeline graph, defined once: the CLI, the demo, the notebooks and Dataflow all build it
here. Transform names are stable — Dataflow's ``--update`` maps running state by them.

    Read -> TransactionStats[Parse -> Dedupe -> Window -> Aggregate (-> AggregateBy<dim>)]
         -> WriteWindows, WriteDeadLetters (, WriteDimensionStats, PublishDeadLetters)
         (-> DetectAnomalies -> WriteAnomalies (, PublishAnomalies))   with settings.anomalies
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from txpipe import batch
from txpipe.aggregate import AggregateByDimension, AggregateWindows
from txpipe.config import Settings
from txpipe.dedupe import DropDuplicates
from txpipe.parse import DEAD_LETTERS, VALID, ParseTransactions
from txpipe.sinks import Sink
from txpipe.sources import Source
from txpipe.windowing import WindowSpec, WindowTransactions


@dataclass
class StatsResult:
    """The PCollections a TransactionStats application produces."""

    windows: Any
    dead_letters: Any
    _transactions: Any = field(repr=False)  # a PCollection, or a function that applies it
    by_dimension: Any = None

    @property
    def transactions(self):
        """The windowed transactions (the chunked plan builds them only when asked for)."""
        if callable(self._transactions):
            self._transactions = self._transactions()
        return self._transactions


class TransactionStats(beam.PTransform):
    """Raw messages -> window rows, dead letters (and optional per-dimension rows)."""

    def __init__(self, spec: WindowSpec, dedupe_horizon_seconds: int = 600,
                 breakdown: str | None = None, dedupe: beam.PTransform | None = None):
        super().__init__()
        self.spec = spec
        self.dedupe_horizon_seconds = dedupe_horizon_seconds
        self.breakdown = breakdown
        # A runner-specific replacement for DropDuplicates (same results and counters), e.g.
        # the lab's dedupe for the DirectRunner (txpipe.runners.LocalRunner.dedupe).
        self.dedupe = dedupe
        if breakdown:  # fail at construction, not deep inside a running job
            AggregateByDimension(breakdown)

    @classmethod
    def from_settings(cls, settings: Settings, breakdown: str | None = None,
                      dedupe: beam.PTransform | None = None) -> TransactionStats:
        return cls(WindowSpec.from_settings(settings), settings.dedupe_horizon_seconds, breakdown,
                   dedupe)

    def expand(self, messages) -> StatsResult:
        if batch.applies(messages, self.spec, self.breakdown):
            plan = batch.ChunkedStats(self.spec)
            rows, dead = plan.expand(messages)
            return StatsResult(rows, dead, lambda: plan.transactions(f"{self.label}Transactions"))
        parsed = messages | "Parse" >> ParseTransactions()
        windowed = (
            parsed[VALID]
            | "Dedupe" >> (self.dedupe or DropDuplicates(self.dedupe_horizon_seconds))
            | "Window" >> WindowTransactions(self.spec)
        )
        rows = windowed | "Aggregate" >> AggregateWindows()
        by_dim = None
        if self.breakdown:
            by_dim = windowed | f"AggregateBy{self.breakdown.title().replace('_', '')}" >> (
                AggregateByDimension(self.breakdown))
        return StatsResult(rows, parsed[DEAD_LETTERS], windowed, by_dim)


def build_pipeline(pipeline: beam.Pipeline, settings: Settings, source: Source, sink: Sink,
                   breakdown: str | None = None,
                   dead_letter_topic: str | None = None,
                   dedupe: beam.PTransform | None = None) -> StatsResult:
    """Read from ``source``, compute the stats, write them to ``sink``; returns the PCollections."""
    messages = pipeline | "Read" >> source.transform()
    result = messages | "TransactionStats" >> TransactionStats.from_settings(
        settings, breakdown, dedupe)
    result.windows | "WriteWindows" >> sink.windows()
    result.dead_letters | "WriteDeadLetters" >> sink.dead_letters()
    if result.by_dimension is not None:
        result.by_dimension | "WriteDimensionStats" >> sink.dimension_stats()
    if dead_letter_topic:
        (
            result.dead_letters
            | "DeadLettersToJson" >> beam.Map(_dead_letter_message)
            | "PublishDeadLetters" >> beam.io.WriteToPubSub(dead_letter_topic)
        )
    if settings.anomalies:
        detect_anomalies(result, settings, sink)
    return result


def detect_anomalies(result: StatsResult, settings: Settings, sink: Sink):
    """The optional detection stage (txpipe.anomaly) on the window and per-dimension rows."""
    from txpipe.anomaly import DetectAnomalies
    from txpipe.schema import ANOMALIES

    rows = (result.windows,) if result.by_dimension is None else (
        result.windows, result.by_dimension)
    found = rows | "DetectAnomalies" >> DetectAnomalies.from_settings(settings)
    found | "WriteAnomalies" >> sink.anomalies()
    if settings.alert_topic_path:
        (
            found
            | "AnomaliesToJson" >> beam.Map(lambda row: ANOMALIES.to_jsonl(row).encode())
            | "PublishAnomalies" >> beam.io.WriteToPubSub(settings.alert_topic_path)
        )
    return found


def _dead_letter_message(row: dict) -> bytes:
    from txpipe.schema import DEAD_LETTERS as TABLE

    return TABLE.to_jsonl(row).encode()

"""The pipeline graph, defined once: the CLI, the demo, the notebooks and Dataflow all build it
here. Transform names are stable — Dataflow's ``--update`` maps running state by them.

    Read -> TransactionStats[Parse -> Dedupe -> Window -> Aggregate (-> AggregateBy<dim>)]
         -> WriteWindows (, WriteDimensionStats)
         -> [parse dead letters + rows the warehouse refused] -> IdentifyDeadLetters
         -> WriteDeadLetters (, PublishDeadLetters)
         (-> DetectAnomalies -> WriteAnomalies (, PublishAnomalies))   with settings.anomalies

TransactionStats has two routes with those stage names: element-wise (streaming's, and
anything's) and batched (bounded input, txpipe.batch). :func:`choose_route` picks one for a
run and says why; the CLI prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from txpipe import batch, schema
from txpipe.aggregate import AggregateByDimension, AggregateWindows
from txpipe.config import Route, Settings
from txpipe.dedupe import DropDuplicates
from txpipe.dedupe import for_source as dedupe_for_source
from txpipe.parse import DEAD_LETTERS, VALID, ParseTransactions
from txpipe.sinks import IdentifyDeadLetters, RunIdentity, Sink
from txpipe.sources import Source
from txpipe.windowing import WindowSpec, WindowTransactions


@dataclass
class StatsResult:
    """The PCollections a TransactionStats application produces, and the route it took."""

    windows: Any
    dead_letters: Any
    route: Route
    by_dimension: Any = None


class TransactionStats(beam.PTransform):
    """Raw messages -> window rows, dead letters (and optional per-dimension rows).

    ``route`` says how: ELEMENTWISE (the default) is the streaming plan and takes anything;
    BATCHED takes bounded input only (txpipe.batch) — chosen by the caller, never swapped in
    here. Both give the same rows, dead letters and counters.
    """

    def __init__(self, spec: WindowSpec, dedupe_horizon_seconds: int = 600,
                 breakdown: str | None = None, dedupe: beam.PTransform | None = None,
                 route: Route = Route.ELEMENTWISE, buckets: int = batch.DEFAULT_BUCKETS):
        super().__init__()
        self.spec = spec
        self.dedupe_horizon_seconds = dedupe_horizon_seconds
        self.breakdown = breakdown
        # A runner-specific replacement for DropDuplicates (same results and counters), e.g.
        # the lab's dedupe for the DirectRunner (txpipe.lab.direct_pubsub.LocalStreaming.dedupe).
        self.dedupe = dedupe
        self.route = Route(route)
        self.buckets = buckets
        if breakdown:  # fail at construction, not deep inside a running job
            AggregateByDimension(breakdown)
        if self.route is Route.BATCHED:
            reason = batch.declines(spec, breakdown)
            if reason:
                raise ValueError(f"--route batched: {reason}")

    @classmethod
    def from_settings(cls, settings: Settings, breakdown: str | None = None,
                      dedupe: beam.PTransform | None = None, route: Route = Route.ELEMENTWISE,
                      buckets: int = batch.DEFAULT_BUCKETS) -> TransactionStats:
        return cls(WindowSpec.from_settings(settings), settings.dedupe_horizon_seconds, breakdown,
                   dedupe, route, buckets)

    def _dimension_label(self) -> str:
        return f"AggregateBy{self.breakdown.title().replace('_', '')}" if self.breakdown else ""

    def expand(self, messages) -> StatsResult:
        if self.route is Route.BATCHED:
            if not messages.is_bounded:
                raise ValueError("the batched route needs bounded input; streams go element-wise")
            plan = batch.BatchedStats(self.spec, self.buckets, self.breakdown,
                                      self._dimension_label())
            rows, dead, by_dim = plan.expand(messages)
            return StatsResult(rows, dead, self.route, by_dim)
        parsed = messages | "Parse" >> ParseTransactions()
        windowed = (
            parsed[VALID]
            | "Dedupe" >> (self.dedupe or DropDuplicates(self.dedupe_horizon_seconds))
            | "Window" >> WindowTransactions(self.spec)
        )
        rows = windowed | "Aggregate" >> AggregateWindows()
        by_dim = None
        if self.breakdown:
            by_dim = windowed | self._dimension_label() >> AggregateByDimension(self.breakdown)
        return StatsResult(rows, parsed[DEAD_LETTERS], self.route, by_dim)


def choose_route(settings: Settings, source: Source, breakdown: str | None = None
                 ) -> tuple[Route, str]:
    """The route a run takes, and why, in words for its log line. Asked-for routes are
    checked, not second-guessed: a batched route for a stream is an error."""
    spec = WindowSpec.from_settings(settings)
    declined = batch.declines(spec, breakdown)
    if settings.route is Route.BATCHED:
        if source.streaming:
            raise ValueError("--route batched needs bounded input (a replay); streams are "
                             "element-wise")
        if declined:
            raise ValueError(f"--route batched: {declined}")
        return Route.BATCHED, "asked for"
    if settings.route is Route.ELEMENTWISE:
        return Route.ELEMENTWISE, "asked for"
    if source.streaming:
        return Route.ELEMENTWISE, "streaming input"
    if declined:
        return Route.ELEMENTWISE, declined
    return Route.BATCHED, "bounded input"


def build_pipeline(pipeline: beam.Pipeline, settings: Settings, source: Source, sink: Sink,
                   breakdown: str | None = None,
                   dead_letter_topic: str | None = None,
                   dedupe: beam.PTransform | None = None,
                   route: Route | None = None) -> StatsResult:
    """Read from ``source``, compute the stats, write them to ``sink``; returns the PCollections.
    ``route`` None: :func:`choose_route` picks it.

    Rows are written under the run's identity (``settings.run_id``, else derived from a
    replay's input or drawn: txpipe.sinks.identity). Rows the sink refuses come back as dead
    letters and go with the parse dead letters, so nothing vanishes at the sink either."""
    if route is None:
        route, _ = choose_route(settings, source, breakdown)
    buckets = batch.buckets_for(source.estimated_bytes())
    if dedupe is None and route is Route.ELEMENTWISE:
        streaming = pipeline.options.view_as(StandardOptions).streaming
        dedupe = dedupe_for_source(source, settings.dedupe_horizon_seconds, streaming, buckets)
    run = RunIdentity.for_run(settings, source, breakdown)
    messages = pipeline | "Read" >> source.transform()
    result = messages | "TransactionStats" >> TransactionStats.from_settings(
        settings, breakdown, dedupe, route, buckets)
    dead = [result.dead_letters, result.windows | "WriteWindows" >> sink.windows(run)]
    if result.by_dimension is not None:
        dead.append(result.by_dimension | "WriteDimensionStats" >> sink.dimension_stats(run))
    if settings.anomalies:
        dead.append(detect_anomalies(result, settings, sink, run))
    dead = [d for d in dead if d is not None]
    everything = tuple(dead) | "CollectDeadLetters" >> beam.Flatten() if len(dead) > 1 else dead[0]
    dead_letters = everything | "IdentifyDeadLetters" >> IdentifyDeadLetters(run.run_id)
    dead_letters | "WriteDeadLetters" >> sink.dead_letters(run)
    if dead_letter_topic:
        (
            dead_letters
            | "DeadLettersToJson" >> beam.Map(_dead_letter_message)
            | "PublishDeadLetters" >> beam.io.WriteToPubSub(dead_letter_topic)
        )
    return result


def detect_anomalies(result: StatsResult, settings: Settings, sink: Sink, run: RunIdentity):
    """The optional detection stage (txpipe.anomaly) on the window and per-dimension rows;
    returns the anomaly rows the sink refused, as dead letters (or None)."""
    from txpipe.anomaly import DetectAnomalies  # Beam's anomaly package (0.18 s): only if asked

    rows = (result.windows,) if result.by_dimension is None else (
        result.windows, result.by_dimension)
    found = rows | "DetectAnomalies" >> DetectAnomalies.from_settings(settings)
    refused = found | "WriteAnomalies" >> sink.anomalies(run)
    if settings.alert_topic_path:
        (
            found
            | "AnomaliesToJson" >> beam.Map(
                lambda row: schema.ANOMALIES.to_jsonl(run.stamp_anomaly(row)).encode())
            | "PublishAnomalies" >> beam.io.WriteToPubSub(settings.alert_topic_path)
        )
    return refused


def _dead_letter_message(row: dict) -> bytes:
    return schema.DEAD_LETTERS.to_jsonl(row).encode()

"""Drop redelivered transactions: Pub/Sub delivers at least once, and a sum must count once.

Three ways, one result — the first delivery of each transaction_id within the horizon — and
the same counters (``transactions_unique``; ``duplicates_dropped`` is valid − unique):

- :class:`DropDuplicates`: Beam's own ``DeduplicatePerKey`` keyed by the id, with a
  processing-time horizon (redelivery is a processing-time event: an ack deadline that ran out),
  so its timers never hold back the event-time watermark. Works on every runner.
- :class:`SourceDeduplicated`: when the source itself drops repeated ids for at least the
  horizon — Dataflow's Pub/Sub read with ``id_label`` does for 10 minutes — the step only
  counts. Keyed state per id would repeat that work, and costs most of the element-wise plan's
  CPU on the SDK harness Dataflow's workers run (README "Performance").
- the batched route's GroupByKey of id buckets, for bounded input (txpipe.batch).

The lab supplies a fourth for the DirectRunner's local streaming (txpipe.runners).
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Duration

from txpipe import metrics


class CountUniqueFn(beam.DoFn):
    """Counts what passes (per bundle, flushed once: a counter update per element costs more
    than the element's own work)."""

    def __init__(self):
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def start_bundle(self):
        self._n = 0

    def process(self, element):
        self._n += 1
        yield element

    def finish_bundle(self):
        self._unique.inc(self._n)
        self._n = 0


def _id_and_transaction(tx) -> tuple[str, Any]:
    return tx.transaction_id, tx


def _transaction(kv: tuple[str, Any]) -> Any:
    return kv[1]


class DropDuplicates(beam.PTransform):
    """Transactions -> the first delivery of each transaction_id within the horizon."""

    def __init__(self, horizon_seconds: int = 600):
        super().__init__()
        self._horizon_seconds = horizon_seconds

    def expand(self, transactions):
        return (
            transactions
            | "KeyById" >> beam.Map(_id_and_transaction).with_output_types(
                KV[str, Any])  # a str key coder is deterministic, as keyed state requires
            | "FirstDelivery" >> DeduplicatePerKey(
                processing_time_duration=Duration(seconds=self._horizon_seconds))
            | "Transactions" >> beam.Map(_transaction)
            | "CountUnique" >> beam.ParDo(CountUniqueFn())
        )


class SourceDeduplicated(beam.PTransform):
    """Transactions the source already deduplicated: counted, passed on as they are."""

    def expand(self, transactions):
        return transactions | "CountUnique" >> beam.ParDo(CountUniqueFn())


def for_source(source: Any, horizon_seconds: int) -> beam.PTransform:
    """The Dedupe a pipeline reading ``source`` needs: none of its own when the source drops
    repeated ids for at least ``horizon_seconds`` (its ``dedupe_seconds``)."""
    if source.dedupe_seconds >= horizon_seconds:
        return SourceDeduplicated()
    return DropDuplicates(horizon_seconds)

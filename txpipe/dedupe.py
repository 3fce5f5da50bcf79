"""Drop repeated transactions: a publisher re-sends a message it is unsure was delivered (a new
Pub/Sub message with the same transaction_id), Pub/Sub may redeliver, and a sum must count once.

Three ways, one result — the first delivery of each transaction_id within the horizon — and
the same counters (``transactions_unique``; ``duplicates_dropped`` is valid − unique):

- :class:`DropDuplicates`: Beam's own ``DeduplicatePerKey`` keyed by the id, with a
  processing-time horizon (a re-send or redelivery comes soon after the first, in processing time),
  so its timers never hold back the event-time watermark. Works on every runner.
- :class:`SourceDeduplicated`: when the source itself drops repeated ids for at least the
  horizon — Dataflow's Pub/Sub read with ``id_label`` does for 10 minutes — the step only
  counts. Keyed state per id would repeat that work, and costs most of the element-wise plan's
  CPU on the SDK harness Dataflow's workers run (benchmarks/README.md).
- :class:`ShuffleDeduplicated`: bounded input in a batch pipeline: a GroupByKey of id buckets
  (as the batched route's, txpipe.batch) meets every copy of an id, with no state per id.

The lab supplies a fourth for the DirectRunner's local streaming (txpipe.runners).
"""

from __future__ import annotations

import io
import pickle
import zlib
from decimal import Decimal
from typing import Any

import apache_beam as beam
from apache_beam.coders import Coder, registry
from apache_beam.metrics import Metrics
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import create as windowed_value

from txpipe import metrics
from txpipe.contract import Transaction, from_micros
from txpipe.windowing import GLOBAL, in_global_window


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


class Deliveries:
    """Transactions of one id bucket, and their event times (micros), across the shuffle."""

    __slots__ = ("transactions", "micros")

    def __init__(self, transactions: list[Transaction] | None = None,
                 micros: list[int] | None = None):
        self.transactions = [] if transactions is None else transactions
        self.micros = [] if micros is None else micros


class DeliveriesCoder(Coder):
    """One pickle per list, amounts as text and event times as micros: pickling Decimals and
    datetimes one by one costs more than the dedupe itself."""

    def encode(self, value: Deliveries) -> bytes:
        out = io.BytesIO()
        pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
        pickler.fast = True
        pickler.dump((value.micros, [(tx[0], str(tx[1]), *tx[3:]) for tx in value.transactions]))
        return out.getvalue()

    def decode(self, encoded: bytes) -> Deliveries:
        micros, rows = pickle.loads(encoded)
        return Deliveries([Transaction(t[0], Decimal(t[1]), from_micros(m), *t[2:])
                           for t, m in zip(rows, micros, strict=True)], micros)

    def estimate_size(self, value: Deliveries) -> int:
        return 64 * len(value.transactions)  # not encoding twice for Beam's size sampling

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Deliveries


registry.register_coder(Deliveries, DeliveriesCoder)

#: Transactions per Deliveries list: per-list costs vanish, a bundle's memory stays bounded.
DELIVERIES_SIZE = 20_000


def bucket_of(transaction_id: str, buckets: int) -> int:
    """The shuffle bucket of an id, where all its copies meet: crc32, not hash() — str hashes
    differ between worker processes."""
    return zlib.crc32(transaction_id.encode()) % buckets


def first_deliveries(ids: list[str], seen: set[str] | None = None) -> list[int] | None:
    """Indexes (in order) of the first copy of each id in ``ids`` that ``seen`` does not hold
    yet, which then holds them too; None when that is every index. Without ``seen``, no id
    was seen before (and none is remembered: a set of them all costs a third of the work)."""
    # id -> index of its first copy (later copies are written first, so the first one's index
    # is what stays), minus the ids seen before
    first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
    if seen is not None:
        for repeated in first.keys() & seen:
            del first[repeated]
        seen.update(first)
    return None if len(first) == len(ids) else sorted(first.values())


class BucketByIdFn(beam.DoFn):
    """Transactions -> (bucket of their id, Deliveries), a list per bucket and bundle."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def start_bundle(self):
        self._lists: dict[int, Deliveries] = {}

    def process(self, tx, windowed=beam.DoFn.WindowedValueParam):
        bucket = bucket_of(tx.transaction_id, self._buckets)
        found = self._lists.get(bucket)
        if found is None:
            found = self._lists[bucket] = Deliveries()
        found.transactions.append(tx)
        found.micros.append(windowed.timestamp_micros)  # no Timestamp object per element
        if len(found.micros) >= DELIVERIES_SIZE:
            del self._lists[bucket]
            yield bucket, found

    def finish_bundle(self):
        lists, self._lists = self._lists, {}
        for bucket, found in lists.items():
            yield in_global_window((bucket, found))


class FirstOfBucketFn(beam.DoFn):
    """(bucket, its Deliveries) -> the first delivery of each id, back at its event time;
    counts what it keeps (as :class:`CountUniqueFn`, without a step per element)."""

    def __init__(self):
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def process(self, element):
        seen: set[str] = set()
        for found in element[1]:
            txs, micros = found.transactions, found.micros
            keep = first_deliveries([tx.transaction_id for tx in txs], seen)
            for k in range(len(txs)) if keep is None else keep:
                yield windowed_value(txs[k], micros[k], GLOBAL)
        self._unique.inc(len(seen))


class ShuffleDeduplicated(beam.PTransform):
    """Bounded transactions (a batch pipeline) -> the first delivery of each transaction_id.

    Every copy of an id meets in its bucket after one GroupByKey; the horizon does not apply
    (a replay's copies are all within it). Only for a batch pipeline: a streaming one would
    hold every window until the input ends and then find them expired.
    """

    def __init__(self, buckets: int):
        super().__init__()
        self._buckets = buckets

    def expand(self, transactions):
        return (
            transactions
            | "BucketById" >> beam.ParDo(BucketByIdFn(self._buckets)).with_output_types(
                KV[int, Deliveries])
            | "GroupByBucket" >> beam.GroupByKey()
            | "FirstDelivery" >> beam.ParDo(FirstOfBucketFn()).with_output_types(Transaction)
        )


def for_source(source: Any, horizon_seconds: int, streaming: bool = True,
               buckets: int = 16) -> beam.PTransform:
    """The Dedupe a pipeline reading ``source`` needs: none of its own when the source drops
    repeated ids for at least ``horizon_seconds`` (its ``dedupe_seconds``); a shuffle of
    ``buckets`` id buckets for bounded input in a batch (not ``streaming``) pipeline."""
    if source.dedupe_seconds >= horizon_seconds:
        return SourceDeduplicated()
    if not streaming and not source.streaming:
        return ShuffleDeduplicated(buckets)
    return DropDuplicates(horizon_seconds)

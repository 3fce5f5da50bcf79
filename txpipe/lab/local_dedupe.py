"""The dedupe for local streaming: the runtime's :class:`txpipe.dedupe.DropDuplicates`, keyed by a
hash bucket of the id instead of the id itself.

The runtime keeps one key per transaction id, each with a processing-time timer that forgets it
after the horizon — what Dataflow's per-key state is built for. The DirectRunner's monitor scans
every key's timers on each pass, so there the cost grows with rate × horizon (60 % of the CPU
at 40k ids) and caps local streaming. Here the ids live in a few buckets (crc32 of the id), each
one combining state holding its ids with their expiry, checked when an id comes back: no timers
at all. Results and counters are the runtime's (``tests/test_local_dedupe.py`` compares them).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import CombiningValueStateSpec
from apache_beam.typehints import KV

from txpipe import metrics

BUCKETS = 64
#: Expired ids are swept from a bucket once it has grown by this many since its last sweep.
SWEEP_EVERY = 4096


class _SeenIds(beam.CombineFn):
    """Accumulator: {transaction_id: expiry (epoch µs)}; an input is ``(id, expiry, now)``."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, seen: dict[str, int], element: tuple[str, int, int]) -> dict[str, int]:
        tx_id, expiry, now = element
        seen[tx_id] = expiry
        if len(seen) % SWEEP_EVERY == 0:
            for gone in [k for k, v in seen.items() if v <= now]:
                del seen[gone]
        return seen

    def merge_accumulators(self, accumulators) -> dict[str, int]:
        merged: dict[str, int] = {}
        for seen in accumulators:
            for tx_id, expiry in seen.items():
                if expiry > merged.get(tx_id, 0):
                    merged[tx_id] = expiry
        return merged

    def extract_output(self, seen: dict[str, int]) -> dict[str, int]:
        return seen  # the live dict: read() then add() within a bundle see each other


class _FirstDeliveryFn(beam.DoFn):
    SEEN = CombiningValueStateSpec("seen", PickleCoder(), _SeenIds())

    """Passes the first delivery of each id on and counts it, as the runtime's Dedupe does
    (``duplicates_dropped`` is derived: valid - unique, txpipe.metrics)."""

    def __init__(self, horizon_seconds: int):
        self._horizon = horizon_seconds * 1_000_000
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def start_bundle(self):
        self._n_unique = 0

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        tx = element[1]
        now = time.time_ns() // 1000
        if seen.read().get(tx.transaction_id, 0) > now:
            return
        seen.add((tx.transaction_id, now + self._horizon, now))
        self._n_unique += 1
        yield tx

    def finish_bundle(self):
        self._unique.inc(self._n_unique)


def bucket(tx_id: str, buckets: int = BUCKETS) -> int:
    return zlib.crc32(tx_id.encode("utf-8", "surrogatepass")) % buckets


class BucketedDropDuplicates(beam.PTransform):
    """Transactions -> the first delivery of each transaction_id within the horizon (processing
    time), as :class:`txpipe.dedupe.DropDuplicates`, with ids kept in ``buckets`` keys."""

    def __init__(self, horizon_seconds: int = 600, buckets: int = BUCKETS):
        super().__init__()
        self._horizon_seconds = horizon_seconds
        self._buckets = buckets

    def expand(self, transactions):
        buckets = self._buckets
        return (
            transactions
            | "KeyByBucket" >> beam.Map(lambda tx: (bucket(tx.transaction_id, buckets), tx))
            .with_output_types(KV[int, Any])
            | "FirstDelivery" >> beam.ParDo(_FirstDeliveryFn(self._horizon_seconds))
        )

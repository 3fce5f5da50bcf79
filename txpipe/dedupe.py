"""Drop redelivered transactions: Pub/Sub delivers at least once, and a sum must count once.

Dataflow can deduplicate at the source (ReadFromPubSub ``id_label``), the DirectRunner ignores
that label, so the pipeline deduplicates itself, on every runner, with per-id state. The
horizon is in processing time — redelivery is a processing-time event (an ack deadline that
ran out) — so the state timer never holds back the event-time watermark and windows fire on
time.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Duration, Timestamp

from txpipe import metrics


class DropDuplicatesFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.REAL_TIME)

    def __init__(self, horizon_seconds: int):
        self._horizon = Duration(seconds=horizon_seconds)
        self._dropped = Metrics.counter(metrics.NAMESPACE, metrics.DUPLICATES_DROPPED)
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def start_bundle(self):
        self._n_dropped = 0
        self._n_unique = 0

    def process(
        self,
        element,
        seen=beam.DoFn.StateParam(SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        if seen.read():
            self._n_dropped += 1
            return
        seen.write(True)
        expiry.set(Timestamp.now() + self._horizon)
        self._n_unique += 1
        yield element[1]

    @on_timer(EXPIRY)
    def forget(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()

    def finish_bundle(self):
        self._dropped.inc(self._n_dropped)
        self._unique.inc(self._n_unique)


class DropDuplicates(beam.PTransform):
    """Transactions -> the first delivery of each transaction_id within the horizon."""

    def __init__(self, horizon_seconds: int = 600):
        super().__init__()
        self._horizon_seconds = horizon_seconds

    def expand(self, transactions):
        return (
            transactions
            | "KeyById" >> beam.Map(lambda tx: (tx.transaction_id, tx)).with_output_types(
                KV[str, Any])  # a str key coder is deterministic, as keyed state requires
            | "FirstDelivery" >> beam.ParDo(DropDuplicatesFn(self._horizon_seconds))
        )

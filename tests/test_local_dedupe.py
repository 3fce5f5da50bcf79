"""The local dedupe (ids in hash buckets, no timers) and the runtime's DropDuplicates (one key and
one timer per id) agree: same first deliveries out, same counters, on the streaming DirectRunner
with the stream cut into bundles anywhere."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.utils.timestamp import Timestamp
from collect import Outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from txpipe import metrics
from txpipe.contract import Transaction
from txpipe.dedupe import DropDuplicates
from txpipe.lab.direct_pubsub import streaming_metrics
from txpipe.lab.local_dedupe import BucketedDropDuplicates, bucket

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

# Deliveries: ids drawn from a small pool (so they repeat), each copy with its own amount, so
# which copy came out says whether it was the first.
ids = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
              max_size=12)
streams = st.lists(ids, min_size=1, max_size=12, unique=True).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=120))


def _run(deliveries: list[str], cuts: list[int]):
    stream = test_stream.TestStream()
    txs = [Transaction(tx_id, Decimal(n + 1), T0) for n, tx_id in enumerate(deliveries)]
    start = 0
    for k, cut in enumerate([*sorted(set(cuts)), len(txs)]):
        if cut > start:
            stream.add_elements(txs[start:cut])
            stream.advance_watermark_to(Timestamp(k + 1))
            start = cut
    stream.advance_watermark_to_infinity()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=options)
    source = p | stream
    out = Outputs()
    for name, dedupe in (("Runtime", DropDuplicates(600)), ("Local", BucketedDropDuplicates(600, 4))):
        _ = source | name >> dedupe | f"{name}Keep" >> out.keep(name)
    with streaming_metrics():
        result = p.run()
        result.wait_until_finish()
    counters = {}
    for name in ("Runtime", "Local"):
        query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE)
                                       .with_step(name))
        counters[name] = Counter({c.key.metric.name: c.committed for c in query["counters"]})
    outputs = {name: [(tx.transaction_id, tx.amount) for tx in out[name]]
               for name in ("Runtime", "Local")}
    return outputs, counters


@settings(deadline=None, max_examples=5)
@given(streams, st.lists(st.integers(0, 120), max_size=6))
def test_both_dedupes_keep_the_same_first_deliveries_and_count_the_same(deliveries, cuts):
    outputs, counters = _run(deliveries, cuts)
    first: dict[str, Decimal] = {}
    for n, tx_id in enumerate(deliveries):
        first.setdefault(tx_id, Decimal(n + 1))
    expected = sorted(first.items())
    assert sorted(outputs.get("Runtime", [])) == expected
    assert sorted(outputs.get("Local", [])) == expected
    want = Counter({metrics.UNIQUE: len(first)})  # duplicates_dropped: valid - unique
    assert +counters["Runtime"] == +want
    assert +counters["Local"] == +want


def test_ids_spread_over_the_buckets_and_always_land_in_the_same_one():
    spread = Counter(bucket(f"tx-{n}") for n in range(6400))
    assert len(spread) == 64 and min(spread.values()) > 50
    assert bucket("\udc80 not utf-8") == bucket("\udc80 not utf-8")

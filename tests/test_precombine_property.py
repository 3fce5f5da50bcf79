"""The element-wise route's pre-combine, as a property: for any TestStream (elements in any
order, re-sends, watermark and processing-time steps, early and late data within and beyond
the allowed lateness) and any window shape, trigger and accumulation mode, the pre-combined
Aggregate stages emit exactly the panes of the graph they replace — Beam's CombinePerKey of
the CombineFn over every transaction — window for window, pane for pane (timing, index and
stats) and output timestamp, per window and per dimension value.

Both graphs hang off one Parse -> Dedupe -> Window, so they see the same bundles; the
reference is the Aggregate stage as it was before the pre-combine, written out here.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.transforms.window import TimestampCombiner
from collect import Outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recount import BASE

from txpipe.aggregate import (
    AggregateByDimension,
    AggregateWindows,
    FormatRowFn,
    TransactionStatsFn,
)
from txpipe.config import Accumulation, WindowType
from txpipe.contract import encode_message
from txpipe.dedupe import DropDuplicates
from txpipe.parse import VALID, ParseTransactions
from txpipe.windowing import WindowSpec, WindowTransactions

pytestmark = pytest.mark.slow  # a property over many TestStream runs

T0 = BASE.timestamp()
DIMENSION = "category"


class ReferenceAggregate(beam.PTransform):
    """The Aggregate stage before the pre-combine: every transaction crosses the shuffle."""

    def __init__(self, dimension: str | None = None):
        super().__init__()
        self.dimension = dimension

    def expand(self, transactions):
        dim = self.dimension
        if dim:
            key = beam.Map(lambda tx: (getattr(tx, dim) or "", tx.amount))
        elif transactions.windowing.windowfn.is_merging():
            key = beam.Map(lambda tx: (None, tx.amount))
        else:
            key = beam.Map(lambda tx, win=beam.DoFn.WindowParam: (win.start.micros, tx.amount))
        rows = (transactions | "Key" >> key
                | "Combine" >> beam.CombinePerKey(TransactionStatsFn())
                | "FormatRows" >> beam.ParDo(FormatRowFn(dim)))
        return rows | beam.Map(lambda row: {**row, "dimension": dim}) if dim else rows


def message(tid: str, second: float, cents: int, category: str) -> bytes:
    return encode_message(tid, Decimal(cents).scaleb(-2), BASE + timedelta(seconds=second),
                          category=category)[0]


# a stream: steps of elements, watermark moves and processing-time moves
element = st.tuples(st.integers(0, 11), st.integers(0, 799), st.integers(1, 99_999),
                    st.sampled_from(["food", "travel", "games"]))
step = st.one_of(
    st.tuples(st.just("add"), st.lists(element, min_size=1, max_size=6)),
    st.tuples(st.just("watermark"), st.integers(1, 25)),
    st.tuples(st.just("clock"), st.integers(1, 8)),
)
shapes = st.sampled_from([
    dict(kind=WindowType.FIXED, size_seconds=10),
    dict(kind=WindowType.SLIDING, size_seconds=10, period_seconds=5),
    dict(kind=WindowType.SESSION, gap_seconds=4),
])
specs = st.builds(
    lambda shape, lateness, early, late, acc: WindowSpec(
        **shape, allowed_lateness_seconds=lateness, early_firing_seconds=early,
        late_firings=late, accumulation=acc),
    shapes, st.sampled_from([0, 8, 20]), st.sampled_from([0, 3]), st.booleans(),
    st.sampled_from(list(Accumulation)))


def build_stream(steps) -> Stream:
    stream = Stream().advance_watermark_to(T0)
    watermark = 0
    for kind, arg in steps:
        if kind == "add":
            # ids repeat across steps (re-sends); event times spread around the watermark,
            # so some elements are on time, some late, some beyond the allowed lateness
            stream = stream.add_elements([
                message(f"t{tid}", max(0, watermark - 30) + tenths / 10, cents, cat)
                for tid, tenths, cents, cat in arg])
        elif kind == "watermark":
            watermark += arg
            stream = stream.advance_watermark_to(T0 + watermark)
        else:
            stream = stream.advance_processing_time(arg)
    return stream.advance_watermark_to_infinity()


def rows(out: Outputs, key: str) -> list:
    """Rows without processed_at (a wall clock), with their timestamps, in a stable order."""
    return sorted((tuple(sorted((k, str(v)) for k, v in row.items() if k != "processed_at")),
                   timestamp.micros) for row, timestamp in out[key])


def keep(out: Outputs, key: str):
    return out.keep(key, timestamp=True)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(step, min_size=1, max_size=14), spec=specs)
def test_precombined_panes_equal_the_per_element_graph(steps, spec):
    out = Outputs()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        windowed = (p | build_stream(steps) | ParseTransactions())[VALID] | DropDuplicates(
            600) | WindowTransactions(spec)
        windowed | "Precombined" >> AggregateWindows() | "K1" >> keep(out, "new")
        windowed | "Reference" >> ReferenceAggregate() | "K2" >> keep(out, "old")
        (windowed | "PrecombinedByDim" >> AggregateByDimension(DIMENSION)
         | "K3" >> keep(out, "new_dim"))
        (windowed | "ReferenceByDim" >> ReferenceAggregate(DIMENSION)
         | "K4" >> keep(out, "old_dim"))
    assert rows(out, "new") == rows(out, "old")
    assert rows(out, "new_dim") == rows(out, "old_dim")


def test_the_property_sees_early_late_and_dropped_panes():
    """The generator reaches what the property is about: one hand-picked stream of its kind
    gives EARLY, ON_TIME and LATE panes, and drops data beyond the allowed lateness."""
    out = Outputs()
    steps = [("add", [(1, 2, 100, "food")]), ("clock", 5), ("add", [(2, 3, 200, "food")]),
             ("watermark", 12), ("add", [(3, 4, 300, "games"), (3, 4, 300, "games")]),
             ("watermark", 25), ("add", [(4, 5, 400, "food")])]
    spec = WindowSpec(size_seconds=10, allowed_lateness_seconds=8, early_firing_seconds=3)
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        windowed = (p | build_stream(steps) | ParseTransactions())[VALID] | DropDuplicates(
            600) | WindowTransactions(spec)
        windowed | AggregateWindows() | out.keep("new")
    timings = [r["pane_timing"] for r in sorted(out["new"], key=lambda r: r["pane_index"])]
    assert timings == ["EARLY", "ON_TIME", "LATE"]
    # t4 at 0.5 s arrives when [0, 10) expired (watermark 37 > 10 + 8): in no pane
    assert max(r["total_transactions"] for r in out["new"]) == 3


@pytest.mark.parametrize("combiner", [TimestampCombiner.OUTPUT_AT_EARLIEST,
                                      TimestampCombiner.OUTPUT_AT_LATEST])
def test_other_timestamp_combiners_give_the_same_panes_at_the_same_times(combiner):
    """txpipe windows with the default combiner (the window's end); under another one the
    accumulators carry their transactions' combined timestamp, so panes keep their times."""
    out = Outputs()
    steps = [("add", [(1, 2, 100, "food"), (2, 7, 200, "food"), (3, 164, 300, "games")]),
             ("clock", 5), ("add", [(4, 31, 400, "food")]), ("watermark", 12),
             ("add", [(5, 45, 500, "games"), (6, 12, 600, "games")]), ("watermark", 40)]
    spec = WindowSpec(size_seconds=10, allowed_lateness_seconds=20, early_firing_seconds=3)
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        windowed = (p | build_stream(steps) | ParseTransactions())[VALID] | DropDuplicates(
            600) | beam.WindowInto(spec.window_fn(), trigger=spec.trigger(),
                                   accumulation_mode=spec.accumulation_mode(),
                                   allowed_lateness=20, timestamp_combiner=combiner)
        windowed | "Precombined" >> AggregateWindows() | "K1" >> keep(out, "new")
        windowed | "Reference" >> ReferenceAggregate() | "K2" >> keep(out, "old")
    assert len(out["new"]) >= 4
    assert rows(out, "new") == rows(out, "old")

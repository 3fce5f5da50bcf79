"""Event time on the DirectRunner in streaming mode, driven by TestStream: early, on-time and
late panes, allowed lateness, data beyond it dropped (and absent from every row), fixed /
sliding / session windows, accumulating vs discarding panes.

Each stream is built from messages with known event times; the expected panes follow from
Beam's trigger semantics stated next to each case, not from running the pipeline.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as Stream
from collect import Outputs
from recount import BASE

from txpipe.config import Accumulation, WindowType
from txpipe.contract import encode_message
from txpipe.pipeline import TransactionStats
from txpipe.windowing import WindowSpec

T0 = BASE.timestamp()  # event time 0 of every stream, in seconds since the epoch
def tx(tid: str, second: float, amount: str = "1.00") -> bytes:
    return encode_message(tid, Decimal(amount), BASE + timedelta(seconds=second))[0]


def run(stream: Stream, spec: WindowSpec, horizon: int = 600) -> list[tuple]:
    """Run ``stream`` through TransactionStats; rows as (start s, end s, timing, index,
    count, sum, min, max), in the order windows and panes fire."""
    out = Outputs()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        result = pipeline | stream | TransactionStats(spec, dedupe_horizon_seconds=horizon)
        result.windows | out.keep("windows")
    rows = sorted(out["windows"], key=lambda r: (r["window_start_time"], r["pane_index"]))
    return [(_sec(r["window_start_time"]), _sec(r["window_end_time"]), r["pane_timing"],
             r["pane_index"], r["total_transactions"], r["total_amount_sum"], r["min_amount"],
             r["max_amount"]) for r in rows]


def _sec(moment: datetime) -> float:
    return (moment - BASE).total_seconds()


def D(text: str) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(text)


def early_on_time_late_stream() -> Stream:
    return (
        Stream()
        .advance_watermark_to(T0)
        .advance_processing_time(1)
        .add_elements([tx("a", 1, "0.10"), tx("a", 1, "0.10"), tx("b", 5, "0.20")])  # a twice
        .advance_processing_time(6)            # EARLY pane: a, b
        .add_elements([tx("c", 7, "999999.99")])
        .advance_processing_time(6)            # EARLY pane: + c
        .advance_watermark_to(T0 + 31)         # ON_TIME pane at the window end (30 s)
        .add_elements([tx("d", 10, "0.10")])   # late, within the 30 s allowed lateness
        .advance_watermark_to(T0 + 45)
        .add_elements([tx("e", 29.999, "0.10")])  # late again, still within
        .advance_watermark_to(T0 + 100)        # the window expired at 30 + 30 = 60 s
        .add_elements([tx("f", 12, "5")])      # too late: dropped by the runner
        .advance_watermark_to_infinity()
    )


def test_accumulating_early_on_time_late_and_dropped():
    rows = run(early_on_time_late_stream(), WindowSpec(
        size_seconds=30, allowed_lateness_seconds=30, early_firing_seconds=5,
        accumulation=Accumulation.ACCUMULATING))
    w = (0.0, 30.0)
    assert rows == [
        (*w, "EARLY", 0, 2, D("0.30"), D("0.10"), D("0.20")),
        (*w, "EARLY", 1, 3, D("1000000.29"), D("0.10"), D("999999.99")),
        (*w, "ON_TIME", 2, 3, D("1000000.29"), D("0.10"), D("999999.99")),
        (*w, "LATE", 3, 4, D("1000000.39"), D("0.10"), D("999999.99")),
        (*w, "LATE", 4, 5, D("1000000.49"), D("0.10"), D("999999.99")),
    ]
    # Conservation: 6 unique transactions were delivered (a's re-send dropped); the final
    # accumulating pane holds 5, so the shortfall is exactly the one element beyond the
    # allowed lateness -- f is in no row at all (no pane has a max of 5 or a sum with it).
    unique_delivered = 6
    assert unique_delivered - rows[-1][4] == 1
    assert all(row[7] != D("5") for row in rows)


def test_discarding_panes_hold_only_what_is_new():
    rows = run(early_on_time_late_stream(), WindowSpec(
        size_seconds=30, allowed_lateness_seconds=30, early_firing_seconds=5,
        accumulation=Accumulation.DISCARDING))
    w = (0.0, 30.0)
    assert rows == [
        (*w, "EARLY", 0, 2, D("0.30"), D("0.10"), D("0.20")),
        (*w, "EARLY", 1, 1, D("999999.99"), D("999999.99"), D("999999.99")),
        # the on-time pane always fires, even with nothing new since the last early pane
        (*w, "ON_TIME", 2, 0, D("0"), None, None),
        (*w, "LATE", 3, 1, D("0.10"), D("0.10"), D("0.10")),
        (*w, "LATE", 4, 1, D("0.10"), D("0.10"), D("0.10")),
    ]
    # the panes add up to the accumulating total
    assert sum(r[4] for r in rows) == 5
    assert sum(r[5] for r in rows) == D("1000000.49")


def test_without_early_firings_the_first_pane_is_on_time():
    rows = run(early_on_time_late_stream(), WindowSpec(
        size_seconds=30, allowed_lateness_seconds=30))
    w = (0.0, 30.0)
    assert [r[2:5] for r in rows] == [("ON_TIME", 0, 3), ("LATE", 1, 4), ("LATE", 2, 5)]
    assert rows[0][:2] == w


def test_late_firings_off_drops_late_data_after_the_on_time_pane():
    rows = run(early_on_time_late_stream(), WindowSpec(
        size_seconds=30, allowed_lateness_seconds=30, late_firings=False))
    assert [r[2:6] for r in rows] == [("ON_TIME", 0, 3, D("1000000.29"))]
    assert "no late panes" in WindowSpec(late_firings=False).describe()


def test_zero_allowed_lateness_drops_anything_behind_the_watermark():
    stream = (
        Stream()
        .advance_watermark_to(T0)
        .add_elements([tx("a", 29.999999, "0.10"),   # the last microsecond of [0, 30)
                       tx("b", 30, "0.20"),          # exactly the end: belongs to [30, 60)
                       tx("c", 59.5, "0.30")])
        .advance_watermark_to(T0 + 30)               # [0, 30) fires
        .add_elements([tx("d", 29.5, "7")])          # late, lateness 0: dropped
        .advance_watermark_to_infinity()
    )
    rows = run(stream, WindowSpec(size_seconds=30, allowed_lateness_seconds=0))
    assert rows == [
        (0.0, 30.0, "ON_TIME", 0, 1, D("0.10"), D("0.10"), D("0.10")),
        (30.0, 60.0, "ON_TIME", 0, 2, D("0.50"), D("0.20"), D("0.30")),
    ]


def test_window_end_is_exclusive_in_every_spelling():
    spelled = [
        b'{"transaction_id": "x1", "amount": 1, "timestamp": "2026-11-27T10:00:30Z"}',
        b'{"transaction_id": "x2", "amount": 1, "timestamp": "2026-11-27T11:00:30+01:00"}',
        b'{"transaction_id": "x3", "amount": 1, "timestamp": "2026-11-27t04:30:30.000000-05:30"}',
        b'{"transaction_id": "x4", "amount": 1, "timestamp": "2026-11-27T10:00:29.999999999z"}',
    ]
    stream = Stream().advance_watermark_to(T0).add_elements(spelled)
    rows = run(stream.advance_watermark_to_infinity(), WindowSpec(size_seconds=30))
    assert [(r[0], r[4]) for r in rows] == [(0.0, 1), (30.0, 3)]


def test_sliding_windows_count_an_event_in_every_window_covering_it():
    stream = (Stream().advance_watermark_to(T0)
              .add_elements([tx("a", 12, "0.10"), tx("b", 30, "0.20"), tx("c", 25, "0.30")])
              .advance_watermark_to_infinity())
    rows = run(stream, WindowSpec(kind=WindowType.SLIDING, size_seconds=30, period_seconds=10))
    # windows [k*10, k*10 + 30): a (12) in k=-1,0,1; c (25) in k=0,1,2; b (30) in k=1,2,3
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
        (-10.0, 20.0, "ON_TIME", 1, D("0.10")),
        (0.0, 30.0, "ON_TIME", 2, D("0.40")),
        (10.0, 40.0, "ON_TIME", 3, D("0.60")),
        (20.0, 50.0, "ON_TIME", 2, D("0.50")),
        (30.0, 60.0, "ON_TIME", 1, D("0.20")),
    ]


def test_session_windows_merge_and_take_late_data():
    stream = (
        Stream()
        .advance_watermark_to(T0)
        .add_elements([tx("a", 0, "0.10"), tx("b", 5, "0.20"), tx("c", 30, "0.30")])
        .advance_watermark_to(T0 + 50)   # sessions [0, 15) and [30, 40) close on time
        .add_elements([tx("d", 18, "1")])  # a late session of its own: [18, 28)
        .advance_watermark_to(T0 + 200)  # every session expired
        .add_elements([tx("e", 2, "9")])  # too late for any session: dropped
        .advance_watermark_to_infinity()
    )
    rows = run(stream, WindowSpec(kind=WindowType.SESSION, gap_seconds=10,
                                  allowed_lateness_seconds=30))
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (0.0, 15.0, "ON_TIME", 0, 2, D("0.30")),
        (18.0, 28.0, "LATE", 0, 1, D("1")),
        (30.0, 40.0, "ON_TIME", 0, 1, D("0.30")),
    ]


def test_sessions_bridged_by_a_late_event_merge_into_one():
    stream = (
        Stream()
        .advance_watermark_to(T0)
        .add_elements([tx("a", 0, "0.10"), tx("b", 14, "0.20")])  # sessions [0,10), [14,24)
        .advance_watermark_to(T0 + 30)
        .add_elements([tx("c", 7, "0.30")])  # [7, 17) overlaps both: one session [0, 24)
        .advance_watermark_to_infinity()
    )
    rows = run(stream, WindowSpec(kind=WindowType.SESSION, gap_seconds=10,
                                  allowed_lateness_seconds=60))
    # the two on-time sessions stay as emitted; the late event merges them into a new,
    # wider session whose first pane is LATE and holds all three transactions
    assert rows == [
        (0.0, 10.0, "ON_TIME", 0, 1, D("0.10"), D("0.10"), D("0.10")),
        (0.0, 24.0, "LATE", 0, 3, D("0.60"), D("0.10"), D("0.30")),
        (14.0, 24.0, "ON_TIME", 0, 1, D("0.20"), D("0.20"), D("0.20")),
    ]


@pytest.mark.parametrize("accumulation", list(Accumulation))
def test_duplicates_count_once_across_panes(accumulation):
    stream = (
        Stream()
        .advance_watermark_to(T0)
        .add_elements([tx("a", 1, "0.10"), tx("b", 2, "0.10")])
        .advance_watermark_to(T0 + 31)
        .add_elements([tx("a", 1, "0.10"), tx("c", 3, "0.10")])  # a re-sent after its pane
        .advance_watermark_to_infinity()
    )
    rows = run(stream, WindowSpec(size_seconds=30, allowed_lateness_seconds=30,
                                  accumulation=accumulation))
    assert [r[2] for r in rows] == ["ON_TIME", "LATE"]
    if accumulation is Accumulation.ACCUMULATING:
        assert [r[4] for r in rows] == [2, 3]
    else:
        assert [r[4] for r in rows] == [2, 1]


def test_the_dedupe_horizon_is_processing_time():
    """A re-send inside the horizon counts once; one after it (processing time) counts again:
    Pub/Sub redelivers within its ack deadlines, so the state need not live forever."""
    def stream():
        return (
            Stream()
            .advance_watermark_to(T0)
            .add_elements([tx("a", 1, "0.10")])
            .advance_processing_time(30)
            .add_elements([tx("a", 1, "0.10")])    # inside the 60 s horizon: dropped
            # the horizon has passed: "a" is forgotten. (TestStream's processing clock starts at
            # the epoch while the timer is set from the wall clock, so jump past the wall clock.)
            .advance_processing_time(int(time.time()) + 100)
            .add_elements([tx("a", 1, "0.10")])    # counted again
            .advance_watermark_to_infinity()
        )
    rows = run(stream(), WindowSpec(size_seconds=30), horizon=60)
    assert [r[2:6] for r in rows] == [("ON_TIME", 0, 2, D("0.20"))]
    rows = run(stream(), WindowSpec(size_seconds=30), horizon=600)
    assert [r[2:6] for r in rows] == [("ON_TIME", 0, 1, D("0.10"))]


@pytest.mark.parametrize("window_fn", [
    beam.window.FixedWindows(30), beam.window.FixedWindows(7, offset=3),
    beam.window.SlidingWindows(30, 10), beam.window.SlidingWindows(60, 25, offset=5),
    beam.window.Sessions(20), beam.window.GlobalWindows()],
    ids=["fixed", "fixed-offset", "sliding", "sliding-offset", "sessions", "global"])
def test_assign_windows_is_beams_window_into(window_fn):
    """The Window stage's AssignWindows puts every element in the windows, at the timestamp,
    that Beam's own WindowInto gives it — also an element already in several windows (one
    output per window, as WindowInto's) — and its output carries WindowInto's strategy."""
    import random

    from apache_beam.transforms import trigger

    from txpipe.windowing import AssignWindows

    rng = random.Random(7)
    stamps = [rng.randrange(-10**9, 10**9) / 1000 for _ in range(400)] + [0, 10, 29.999999]
    kwargs = dict(trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                  accumulation_mode=trigger.AccumulationMode.ACCUMULATING, allowed_lateness=30)
    out = Outputs()
    with beam.Pipeline() as p:
        elements = (p | beam.Create(list(enumerate(stamps)))
                    | beam.Map(lambda e: beam.window.TimestampedValue(e, e[1]))
                    | beam.WindowInto(beam.window.SlidingWindows(20, 10)))  # several windows
        for name, into in (("beam", beam.WindowInto(window_fn, **kwargs)),
                           ("txpipe", AssignWindows(window_fn, **kwargs))):
            windowed = elements | f"Into{name}" >> into
            windowed | f"Keep{name}" >> out.keep(name, timestamp=True, window=True)
        assert windowed.windowing == beam.WindowInto(window_fn, **kwargs).windowing
    assert len(out["beam"]) >= 2 * len(stamps)
    assert sorted(out["txpipe"]) == sorted(out["beam"])


def test_parse_takes_messages_in_the_global_window():
    """Parse builds each transaction's WindowedValue in the global window itself, so it refuses
    input a WindowInto has put elsewhere instead of giving it other windows than Beam would."""
    from txpipe.parse import ParseTransactions

    p = beam.Pipeline()
    windowed = p | beam.Create([tx("a", 1)]) | beam.WindowInto(beam.window.FixedWindows(30))
    with pytest.raises(ValueError, match="global window"):
        windowed | ParseTransactions()

"""The event-time lessons' drawing helpers: a TestStream read back as a timeline, when its panes
fired, and the local read's watermark replayed over a stream."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue

from txpipe.lab import streamingbook as book

T0 = 1_800_000_000.0  # an instant on a whole minute


def _stream() -> test_stream.TestStream:
    return (test_stream.TestStream().advance_watermark_to(T0)
            .advance_processing_time(30).add_elements([TimestampedValue(("k", (5, T0 + 10)), T0 + 10)])
            .advance_processing_time(20).add_elements([TimestampedValue(("k", (9, T0 + 20)), T0 + 20)])
            .advance_processing_time(100).advance_watermark_to(T0 + 120)
            .add_elements([TimestampedValue(("k", (1, T0 + 30)), T0 + 30)])
            .advance_watermark_to_infinity())


def test_script_reads_arrivals_and_the_watermark_from_the_stream():
    elements, steps = book.script(_stream())
    assert list(elements["value"]) == [5, 9, 1]
    assert list(elements["arrival"] - T0) == [30, 50, 150]
    assert list(elements["watermark"] - T0) == [0, 0, 120]  # the 1 arrives behind it: late
    assert steps[0] == (T0, T0) and steps[1] == (T0 + 150, T0 + 120)


def test_fire_times_follow_the_trigger_that_fired_each_pane():
    panes = pd.DataFrame([
        {"start": T0, "end": T0 + 120, "total": 14, "timing": "EARLY", "index": 0,
         "contents": [(5, T0 + 10), (9, T0 + 20)]},
        {"start": T0, "end": T0 + 120, "total": 14, "timing": "ON_TIME", "index": 1,
         "contents": [(5, T0 + 10), (9, T0 + 20)]},
        {"start": T0, "end": T0 + 120, "total": 15, "timing": "LATE", "index": 2,
         "contents": [(5, T0 + 10), (9, T0 + 20), (1, T0 + 30)]},
    ])
    fired = [f - T0 for f in book.fire_times(_stream(), panes, early_delay=60)]
    # EARLY: a minute after the 5 (the first element of the pane) arrived at 30 s;
    # ON_TIME: when the watermark reached the window's end; LATE: when the 1 arrived.
    assert fired == [90, 150, 150]
    # Aligned to whole minutes instead (Java's alignedTo(60, T0)): the 5 came at 30 s.
    aligned = [f - T0 for f in book.fire_times(_stream(), panes, None, aligned=(60, T0))]
    assert aligned == [60, 150, 150]


def test_local_read_watermark_is_the_read_s_own_rule():
    start = pd.Timestamp("2026-11-27 10:00:00", tz="UTC")
    sent = [start + timedelta(seconds=s) for s in (0.5, 20.5, 20.7, 40.5)]
    events = [start, start + timedelta(seconds=19), start + timedelta(seconds=2),
              start + timedelta(seconds=40)]
    frame = pd.DataFrame({"sent_at": sent, "event_time": events})
    met = book.local_read_watermark(frame, pull_seconds=1.0, band_seconds=10)
    assert pd.isna(met.iloc[0])  # the first pull meets no watermark yet
    # After the pull at 1 s: the oldest event pulled (0 s) but never past clock - band (-9 s).
    assert met.iloc[1] == met.iloc[2] == start - timedelta(seconds=9)
    # The pull at 21 s held events at 19 s and 2 s: the oldest, below clock - band (11 s).
    assert met.iloc[3] == start + timedelta(seconds=2)

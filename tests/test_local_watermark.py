"""The local Pub/Sub read's pieces without a server: its watermark estimate, how it reads the
``event_ts`` attribute, which late data Beam drops (against Beam's own window functions), and
the fix that makes the streaming DirectRunner's counters right."""

from __future__ import annotations

from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.worker.statesampler import StateSampler
from apache_beam.testing import test_stream
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Duration, Timestamp
from hypothesis import given
from hypothesis import strategies as st

from txpipe import metrics
from txpipe.config import WindowType
from txpipe.contract import parse_timestamp, to_micros
from txpipe.lab.direct_pubsub import (
    SourceWatermark,
    attribute_micros,
    expiry,
    streaming_metrics,
)
from txpipe.metrics import read_counters
from txpipe.windowing import WindowSpec

S = 1_000_000
NOW = to_micros(datetime(2026, 11, 27, 10, 0, tzinfo=UTC))

# A pull: event times in seconds around NOW; or None: a pull that found the subscription empty.
pulls = st.lists(st.one_of(st.none(), st.lists(st.integers(-600, 60), max_size=20)),
                 max_size=30)


@given(pulls, st.integers(0, 30))
def test_the_watermark_never_goes_back_never_passes_the_clock_minus_the_band_nor_data_in_flight(
        steps, band):
    w = SourceWatermark(band_seconds=band)
    now = NOW
    for pull in steps:
        now += S // 2
        before = w.micros
        if pull is None:
            after = w.idle(now)
            assert after == max(before, now - band * S)
        else:
            events = [NOW + e * S for e in pull]
            after = w.pulled(events, now)
            ahead = [e for e in events if e >= before]
            # held at the oldest pulled message not already late, at most
            assert after <= max(before, min(ahead, default=before))
            if ahead:
                assert after == max(before, min(min(ahead), now - band * S))
        assert after >= before
        assert after <= max(before, now - band * S)


def test_a_pipeline_behind_the_clock_keeps_a_watermark_in_the_past_of_its_data():
    """A backlog an hour old is read with a watermark an hour old: nothing on time is late."""
    w = SourceWatermark(band_seconds=10)
    hour_ago = NOW - 3600 * S
    for k in range(5):
        w.pulled([hour_ago + (k * 2 + j) * S for j in range(3)], NOW)
        assert w.micros == hour_ago + 2 * k * S
    w.idle(NOW)  # caught up: now the clock, minus the band
    assert w.micros == NOW - 10 * S


def test_late_messages_do_not_hold_the_watermark_back():
    w = SourceWatermark(band_seconds=10)
    w.idle(NOW)
    w.pulled([NOW - 120 * S, NOW + 5 * S, NOW + 6 * S], NOW + 20 * S)  # one two minutes late
    assert w.micros == NOW + 5 * S


def test_a_future_timestamp_cannot_push_the_watermark_past_the_clock():
    w = SourceWatermark(band_seconds=10)
    w.pulled([NOW + 365 * 86400 * S], NOW)
    assert w.micros == NOW - 10 * S


@pytest.mark.parametrize("value", [
    "2026-11-27T10:00:00.250Z", "2026-11-27T12:00:00.250+02:00", "2026-11-27t10:00:00z",
    "2026-11-27T10:00:00.123456789Z",
])
def test_rfc3339_attributes_read_as_the_contract_reads_timestamps(value):
    assert attribute_micros(value) == to_micros(parse_timestamp(value))


def test_millisecond_attributes_and_the_unusable_ones():
    assert attribute_micros("1795255200250") == 1795255200250 * 1000
    for value in (None, "", "not-a-time", "2026-11-27T10:00:00", "2026-13-01T00:00:00Z",
                  "12.5", "1e12", " 17952552002 "):
        assert attribute_micros(value) is None, value


def _beam_drops(spec: WindowSpec, event: int, watermark: int) -> bool:
    """Beam's rule (trigger.py): an element is ignored in every window whose end plus the
    allowed lateness is behind the watermark — asked of Beam's own window functions."""
    lateness = Duration(micros=(spec.allowed_lateness_seconds if spec.late_firings else 0) * S)
    windows = spec.window_fn().assign(
        window.WindowFn.AssignContext(Timestamp(micros=event)))
    return all(Timestamp(micros=watermark) > w.end + lateness for w in windows)


specs = st.builds(
    WindowSpec,
    kind=st.sampled_from(list(WindowType)),
    size_seconds=st.integers(1, 120),
    period_seconds=st.none(),
    gap_seconds=st.integers(1, 120),
    allowed_lateness_seconds=st.integers(0, 90),
    late_firings=st.booleans(),
)


@given(specs, st.integers(-10**9, 10**9), st.integers(0, 400 * S))
def test_expiry_is_beams_rule_for_every_window_kind(spec, event, behind):
    watermark = NOW + event + behind
    assert expiry(spec)(NOW + event, watermark) == _beam_drops(spec, NOW + event, watermark)


class _Count(beam.DoFn):
    def __init__(self):
        self.n = beam.metrics.Metrics.counter(metrics.NAMESPACE, metrics.READ)

    def process(self, x):
        self.n.inc()
        yield x


def test_streaming_directrunner_counters_count_every_bundle():
    bundles = 40
    stream = test_stream.TestStream()
    for i in range(bundles):
        stream.add_elements([window.TimestampedValue(i, i), window.TimestampedValue(-i, i)])
        stream.advance_watermark_to(Timestamp(i + 1))
    stream.advance_watermark_to_infinity()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=options)
    _ = p | stream | beam.ParDo(_Count())
    before = StateSampler.scoped_state
    with streaming_metrics():
        patched = StateSampler.scoped_state
        result = p.run()
        result.wait_until_finish()
    assert read_counters(result)[metrics.READ] == 2 * bundles  # Beam 2.77 alone: 2
    assert "streaming_metrics" in patched.__qualname__
    # nothing left behind for later pipelines (as it was: patched only if another run is on)
    assert StateSampler.scoped_state is before

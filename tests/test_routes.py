"""The two routes of TransactionStats: which one a run takes and why, what the batched route
refuses, its pieces against Beam's own (window assignment, the file reader's lines against
ReadFromText's). That both routes give the same rows, dead letters and counters is a property
in tests/test_conservation_property.py."""

from __future__ import annotations

import gzip
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from txpipe import batch
from txpipe.config import Route, load_settings
from txpipe.pipeline import TransactionStats, choose_route
from txpipe.sources import FileSource, PubSubSource, _ranges, _ReadRangeFn
from txpipe.windowing import WindowAssigner, WindowSpec


@pytest.mark.parametrize("compress", [False, True])
def test_the_block_reader_yields_the_lines_of_read_from_text_one_by_one_or_in_blocks(tmp_path, compress):
    rng = random.Random(3)
    for trial in range(100):
        lines = [bytes(rng.choice(b"ab{}\xff") for _ in range(rng.randrange(10)))
                 for _ in range(rng.randrange(12))]
        data = b"".join(line + rng.choice([b"\n", b"\r\n"]) for line in lines)
        if lines and rng.random() < 0.3:
            data = data.rstrip(b"\n").rstrip(b"\r")  # no newline after the last line
        expected = data.split(b"\n")  # ReadFromText: no line after a final newline
        if expected[-1] == b"":
            expected.pop()
        expected = [line[:-1] if line.endswith(b"\r") else line for line in expected]
        path = tmp_path / (f"{trial}.txt.gz" if compress else f"{trial}.txt")
        path.write_bytes(gzip.compress(data) if compress else data)
        for range_bytes in (1, 5, 1 << 20):
            block_bytes = rng.choice([1, 3, 64])
            got = [line for r in _ranges(str(path), range_bytes)
                   for line in _ReadRangeFn(block_bytes).process(r)]
            assert got == expected, (data, range_bytes)
            blocks = [block for r in _ranges(str(path), range_bytes)
                      for block in _ReadRangeFn(block_bytes, blocks=True).process(r)]
            assert all(isinstance(block, list) and block for block in blocks)
            assert [line for block in blocks for line in block] == expected


def settings(**overrides):
    return load_settings(env_file=None, **overrides)


@pytest.mark.parametrize(("overrides", "source", "breakdown", "route", "why"), [
    ({}, FileSource("x"), None, Route.BATCHED, "bounded input"),
    ({}, PubSubSource("projects/p/subscriptions/s"), None, Route.ELEMENTWISE, "streaming"),
    ({"route": "element-wise"}, FileSource("x"), None, Route.ELEMENTWISE, "asked for"),
    ({"early_firing_seconds": 5}, FileSource("x"), None, Route.ELEMENTWISE, "early panes"),
    ({"window_type": "session"}, FileSource("x"), "category", Route.ELEMENTWISE, "sessions"),
    ({"window_type": "session"}, FileSource("x"), None, Route.BATCHED, "bounded input"),
    ({"window_type": "sliding"}, FileSource("x"), "country", Route.BATCHED, "bounded input"),
])
def test_the_route_is_chosen_visibly(overrides, source, breakdown, route, why):
    chosen, reason = choose_route(settings(**overrides), source, breakdown)
    assert chosen is route and why in reason


@pytest.mark.parametrize(("overrides", "source", "says"), [
    ({"route": "batched"}, PubSubSource("projects/p/subscriptions/s"), "bounded input"),
    ({"route": "batched", "early_firing_seconds": 5}, FileSource("x"), "early panes"),
])
def test_an_impossible_batched_route_is_refused(overrides, source, says):
    with pytest.raises(ValueError, match=says):
        choose_route(settings(**overrides), source)


def test_the_batched_route_refuses_unbounded_input():
    from apache_beam.testing.test_stream import TestStream

    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    stream = p | TestStream().add_elements([b"{}"]).advance_watermark_to_infinity()
    with pytest.raises(ValueError, match="bounded input"):
        stream | TransactionStats(WindowSpec(), route=Route.BATCHED)


@pytest.mark.parametrize(("estimate", "buckets"), [
    (None, batch.DEFAULT_BUCKETS), (1_000, 1), (200 << 20, 13), (10 << 40, batch.MAX_BUCKETS)])
def test_dedupe_buckets_grow_with_the_input(estimate, buckets):
    assert batch.buckets_for(estimate) == buckets


def test_the_window_assigner_asks_the_window_fn():
    from apache_beam.transforms import window
    from apache_beam.utils.timestamp import Duration, Timestamp

    rng = random.Random(4)
    for window_fn in (window.FixedWindows(30), window.FixedWindows(7, offset=3),
                      window.SlidingWindows(30, 20), window.SlidingWindows(60, 15, offset=5),
                      window.SlidingWindows(Duration(micros=7_000_001), 3, offset=1)):
        assign = WindowAssigner(window_fn)
        # far apart (a stretch each, shifted from the first period's), then close together
        near = rng.randrange(-10**11, 10**11)
        for micros in [rng.randrange(-10**16, 10**16) for _ in range(1500)] + [
                near + rng.randrange(10**8) for _ in range(500)]:
            context = window.WindowFn.AssignContext(Timestamp(micros=micros))
            expected = window_fn.assign(context)
            assert sorted(assign(micros)) == sorted(
                (w.start.micros, w.end.micros) for w in expected), (window_fn, micros)
            assert sorted(assign.windows(micros)) == sorted(expected), (window_fn, micros)
    with pytest.raises(TypeError, match="by period"):
        WindowAssigner(window.Sessions(60))



def test_a_bounded_batch_replay_dedupes_by_a_shuffle_at_event_times(monkeypatch):
    """ShuffleDeduplicated: every id once, back at its event time, whichever list or bucket
    its copies travelled in; with it the element-wise route gives the batched route's rows."""
    from datetime import timedelta
    from decimal import Decimal

    from collect import Outputs
    from recount import BASE

    from txpipe import dedupe, metrics
    from txpipe.contract import encode_message
    from txpipe.parse import VALID, ParseTransactions
    from txpipe.sources import MessagesSource

    monkeypatch.setattr(dedupe, "DELIVERIES_SIZE", 7)  # many lists per bucket
    rng = random.Random(5)
    truth = {f"id{i}": (Decimal(rng.randrange(1, 10**6)).scaleb(-2),
                        BASE + timedelta(milliseconds=rng.randrange(3_600_000)))  # as sent
             for i in range(300)}
    messages = [encode_message(tid, amount, moment)[0] for tid, (amount, moment) in truth.items()]
    messages += rng.sample(messages, 60)  # re-sends, byte for byte
    rng.shuffle(messages)
    out = Outputs()
    with beam.Pipeline() as p:
        unique = ((p | beam.Create(messages) | ParseTransactions())[VALID]
                  | dedupe.ShuffleDeduplicated(buckets=5))
        unique | out.keep("unique", timestamp=True)
    ids = [tx.transaction_id for tx, _ in out["unique"]]
    assert sorted(ids) == sorted(truth)
    for tx, timestamp in out["unique"]:
        amount, moment = truth[tx.transaction_id]
        assert (tx.amount, tx.event_time) == (amount, moment)
        assert timestamp.micros == round(moment.timestamp() * 1000) * 1000

    spec = WindowSpec(size_seconds=60)
    source = MessagesSource(tuple(messages))
    assert isinstance(dedupe.for_source(source, 600, streaming=False),
                      dedupe.ShuffleDeduplicated)
    assert isinstance(dedupe.for_source(source, 600, streaming=True), dedupe.DropDuplicates)
    for route in (Route.ELEMENTWISE, Route.BATCHED):
        with beam.Pipeline() as p:
            stats = (p | source.transform() | TransactionStats(
                spec, route=route, dedupe=dedupe.ShuffleDeduplicated(3)))
            stats.windows | out.keep(route.value)
        result = p.result
        assert metrics.read_counters(result)[metrics.DUPLICATES_DROPPED] == 60
    rows = {route: sorted(sorted((k, str(v)) for k, v in row.items() if k != "processed_at")
                          for row in out[route.value]) for route in Route}
    assert len(rows[Route.ELEMENTWISE]) == 60
    assert rows[Route.ELEMENTWISE] == rows[Route.BATCHED]

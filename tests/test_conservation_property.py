"""Conservation, as a property, on both routes of TransactionStats: for any stream of valid
transactions (oddly spelled, some on window boundaries, sorted or not) in fixed, sliding or
session windows, with exact re-sends and bad records of every reason, the element-wise route's
windows equal an independent pandas / Decimal recount of the unique transactions, the dead
letters are exactly the bad records under their reasons, and the counters balance: read ==
valid + dead_lettered, valid == unique + duplicates_dropped. The batched route gives the same
rows (in the same windows), per-dimension rows, dead letters (every field but seen_at) and
counters.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
from collect import Outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recount import (
    AWKWARD_AMOUNTS,
    BASE,
    Tx,
    assert_windows_match,
    bad_records,
    expected_payload,
    spell_message,
)

from txpipe import metrics
from txpipe.config import Route, WindowType
from txpipe.pipeline import TransactionStats
from txpipe.sources import MessagesSource, read_of
from txpipe.windowing import WindowSpec

BAD = bad_records()
ROUTES = (Route.ELEMENTWISE, Route.BATCHED)
BLOCKS = "batched-blocks"


def _value(v):
    # 33.330 and 33.3300 are one amount; which spelling min/max keep depends on arrival order
    return str(v.normalize()) if isinstance(v, Decimal) else str(v)


def _rows(out: Outputs, key: str) -> list:
    """Rows without processed_at (a wall clock), with their windows, in a stable order."""
    return sorted((sorted((k, _value(v)) for k, v in row.items() if k != "processed_at"),
                   (w.start.micros, w.end.micros)) for row, w in out[key])


def _dead(out: Outputs, key: str) -> list:
    return sorted(sorted((k, v) for k, v in d.items() if k != "seen_at") for d in out[key])


def _counters(run, route: Route | str) -> dict[str, int]:
    """The txpipe counters of one route's steps (both routes run in one pipeline)."""
    route = getattr(route, "value", route)
    from apache_beam.metrics.metric import MetricsFilter

    totals: Counter = Counter()
    query = run.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    for counter in query["counters"]:
        if counter.key.step.startswith(f"{route}/"):
            totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
    totals[metrics.DUPLICATES_DROPPED] = totals[metrics.VALID] - totals[metrics.UNIQUE]
    return totals


amounts = st.one_of(
    st.sampled_from([Decimal(a) for a in AWKWARD_AMOUNTS]),
    st.builds(lambda digits, scale: Decimal(digits).scaleb(-scale),
              st.integers(1, 10**15 - 1), st.integers(0, 9)),
)


@st.composite
def window_specs(draw) -> WindowSpec:
    kind = draw(st.sampled_from([WindowType.FIXED, WindowType.FIXED, WindowType.SLIDING,
                                 WindowType.SESSION]))
    if kind is WindowType.SLIDING:
        size = draw(st.sampled_from([7, 30, 60]))
        period = draw(st.sampled_from([p for p in (3, 5, 10, 30) if p <= size]))
        return WindowSpec(kind=kind, size_seconds=size, period_seconds=period)
    if kind is WindowType.SESSION:
        return WindowSpec(kind=kind, gap_seconds=draw(st.sampled_from([1, 5, 30, 120])))
    return WindowSpec(size_seconds=draw(st.sampled_from([1, 7, 30, 60, 3600])))


@st.composite
def streams(draw):
    spec = draw(window_specs())
    size = spec.gap_seconds if spec.kind is WindowType.SESSION else spec.size_seconds
    n = draw(st.integers(0, 40))
    txs = []
    for i in range(n):
        if draw(st.booleans()):  # on a multiple of the window size / gap: boundaries, and
            micros = draw(st.integers(-20, 20)) * size * 1_000_000  # sessions that just touch
        else:
            micros = draw(st.integers(-600_000_000, 600_000_000))
        txs.append(Tx(f"tx-{i}", draw(amounts), BASE + timedelta(microseconds=micros)))
    resend = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=15)) if n else []
    bad = draw(st.lists(st.sampled_from(BAD), max_size=25))
    seed = draw(st.integers(0, 2**32))
    in_order = draw(st.booleans())  # sorted by event time, or shuffled
    breakdown = None if spec.kind is WindowType.SESSION else draw(st.sampled_from([None, "category"]))
    return spec, txs, resend, bad, seed, in_order, breakdown


@pytest.mark.slow  # forty pipelines, both routes each
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams())
def test_windows_and_dead_letters_conserve_every_message_on_both_routes(stream):
    spec, txs, resend, bad, seed, in_order, breakdown = stream
    rng = random.Random(seed)
    spelled = [spell_message(tx, rng) for tx in txs]
    messages = spelled + [spelled[i] for i in resend] + [raw for raw, _ in bad]
    if in_order:
        when = {m: tx.event_time for m, tx in zip(spelled, txs, strict=True)}
        messages.sort(key=lambda m: when.get(m, BASE))
    else:
        rng.shuffle(messages)

    out = Outputs()
    pipeline = beam.Pipeline()
    source = MessagesSource(tuple(messages))
    read = pipeline | "Read" >> source.transform()
    blocks = pipeline | "ReadBlocks" >> read_of(source, blocks=True)
    # the batched route twice: on messages one by one, and on the blocks it reads in a replay
    for label, route, messages_read in (*((r.value, r, read) for r in ROUTES),
                                        (BLOCKS, Route.BATCHED, blocks)):
        result = messages_read | label >> TransactionStats(spec, breakdown=breakdown,
                                                           route=route)
        assert result.route is route
        result.windows | f"KeepWindows{label}" >> out.keep(f"windows {label}", window=True)
        result.dead_letters | f"KeepDead{label}" >> out.keep(f"dead {label}")
        if breakdown:
            result.by_dimension | f"KeepDims{label}" >> out.keep(f"dims {label}", window=True)
    run = pipeline.run()
    run.wait_until_finish()

    # the windows: an independent recount of the unique valid transactions
    elementwise = Route.ELEMENTWISE.value
    windows = [row for row, _ in out[f"windows {elementwise}"]]
    assert_windows_match(windows, txs, spec.size_seconds, spec.kind.value,
                         spec.period_seconds, spec.gap_seconds)

    # the dead letters: every bad record, under its reason, with its payload
    dead = out[f"dead {elementwise}"]
    assert Counter((d["reason"], d["payload"]) for d in dead) == Counter(
        (reason, expected_payload(raw)) for raw, reason in bad)

    # the counters balance, and each equals what was generated
    counters = _counters(run, Route.ELEMENTWISE)
    read_n, valid = counters.get(metrics.READ, 0), counters.get(metrics.VALID, 0)
    dead_n = counters.get(metrics.DEAD_LETTERED, 0)
    unique = counters.get(metrics.UNIQUE, 0)
    dropped = counters.get(metrics.DUPLICATES_DROPPED, 0)
    assert read_n == len(messages) == valid + dead_n
    assert valid == len(txs) + len(resend) == unique + dropped
    assert (unique, dropped, dead_n) == (len(txs), len(resend), len(bad))
    for reason, n in Counter(reason for _, reason in bad).items():
        assert counters.get(metrics.dead_letter_counter(reason), 0) == n
    assert counters.get(metrics.PANES, 0) == len(windows) + len(
        out[f"dims {elementwise}"])

    # the batched route: the same rows in the same windows, dead letters and counters
    for label in (Route.BATCHED.value, BLOCKS):
        assert _rows(out, f"windows {label}") == _rows(out, f"windows {elementwise}")
        assert _rows(out, f"dims {label}") == _rows(out, f"dims {elementwise}")
        assert _dead(out, f"dead {label}") == _dead(out, f"dead {elementwise}")
        assert _counters(run, label) == counters

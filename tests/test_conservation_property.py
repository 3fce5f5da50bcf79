"""Conservation, as a property: for any stream of valid transactions (oddly spelled, some on
window boundaries) in fixed, sliding or session windows, with exact re-sends and bad records
of every reason, the batch pipeline's windows equal an independent pandas / Decimal recount
of the unique transactions, the dead letters are exactly the bad records under their
reasons, and the counters balance: read == valid + dead_lettered, valid == unique +
duplicates_dropped.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import apache_beam as beam
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
from txpipe.config import WindowType
from txpipe.pipeline import TransactionStats
from txpipe.sources import MessagesSource
from txpipe.windowing import WindowSpec

BAD = bad_records()
_OUT: dict[str, list] = {"windows": [], "dead": []}


def _keep(element, key):
    _OUT[key].append(element)  # module-level: pickled by reference, runs in this process


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
    return spec, txs, resend, bad, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams())
def test_windows_and_dead_letters_conserve_every_message(stream):
    spec, txs, resend, bad, seed = stream
    rng = random.Random(seed)
    spelled = [spell_message(tx, rng) for tx in txs]
    messages = spelled + [spelled[i] for i in resend] + [raw for raw, _ in bad]
    rng.shuffle(messages)

    _OUT["windows"].clear()
    _OUT["dead"].clear()
    pipeline = beam.Pipeline()
    result = (pipeline | "Read" >> MessagesSource(tuple(messages)).transform()
              | TransactionStats(spec))
    result.windows | "KeepWindows" >> beam.Map(_keep, "windows")
    result.dead_letters | "KeepDead" >> beam.Map(_keep, "dead")
    run = pipeline.run()
    run.wait_until_finish()
    counters = metrics.read_counters(run)

    # the windows: an independent recount of the unique valid transactions
    assert_windows_match(_OUT["windows"], txs, spec.size_seconds, spec.kind.value,
                         spec.period_seconds, spec.gap_seconds)

    # the dead letters: every bad record, under its reason, with its payload
    assert Counter((d["reason"], d["payload"]) for d in _OUT["dead"]) == Counter(
        (reason, expected_payload(raw)) for raw, reason in bad)

    # the counters balance, and each equals what was generated
    read, valid = counters.get(metrics.READ, 0), counters.get(metrics.VALID, 0)
    dead = counters.get(metrics.DEAD_LETTERED, 0)
    unique = counters.get(metrics.UNIQUE, 0)
    dropped = counters.get(metrics.DUPLICATES_DROPPED, 0)
    assert read == len(messages) == valid + dead
    assert valid == len(txs) + len(resend) == unique + dropped
    assert (unique, dropped, dead) == (len(txs), len(resend), len(bad))
    for reason, n in Counter(reason for _, reason in bad).items():
        assert counters.get(metrics.dead_letter_counter(reason), 0) == n
    assert counters.get(metrics.PANES, 0) == len(_OUT["windows"])

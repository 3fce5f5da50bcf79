"""Injected anomalies do what their names say, only where the truth says, and score as defined.

Every expectation is recounted here from the messages themselves (and the same stream without
anomalies), never taken from the injector's own bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from simulator import MessageKind, SimulationConfig, SimulationConfigError, Truth, generate
from simulator.anomalies import (
    BURST_AMOUNTS,
    DROP_FRACTION,
    SPIKE_FACTOR,
    LabelledWindow,
    score_findings,
)
from simulator.cli import main as simulator_main
from txpipe.contract import to_micros

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BASE = SimulationConfig(seed=11, rate=10.0, duration=2400.0, start=START, duplicate_rate=0.05,
                        malformed_rate=0.02, late_rate=0.01, jitter_seconds=2.0)
WITH = replace(BASE, anomalies=("default",), anomaly_rate=0.1)
SIZE_US = 30_000_000


def window(moment: datetime) -> int:
    return to_micros(moment) // SIZE_US


@pytest.fixture(scope="module")
def streams():
    base, injected = list(generate(BASE)), list(generate(WITH))
    return base, injected, Truth.from_messages(WITH, injected)


def _window_of(m) -> int:
    return window(m.event_time or START + timedelta(seconds=m.send_offset))


def test_outside_the_labelled_windows_the_stream_is_unchanged(streams):
    base, injected, truth = streams
    labelled = {window(a.start) for a in truth.anomalies}
    assert labelled, "the settings must inject something"
    assert [m.data for m in base if _window_of(m) not in labelled] == [
        m.data for m in injected if _window_of(m) not in labelled]
    assert [m.data for m in generate(WITH)] == [m.data for m in injected]  # seeded


def test_scenarios_take_turns_after_the_warm_up_and_never_touch(streams):
    _, _, truth = streams
    first = window(START) + WITH.anomaly_warmup
    windows = sorted(window(a.start) for a in truth.anomalies)
    assert windows[0] >= first
    assert all(b - a >= 2 for a, b in zip(windows, windows[1:], strict=False))
    order = [a.scenario for a in sorted(truth.anomalies, key=lambda a: a.start)]
    assert order[:3] == ["volume_spike", "amount_burst", "drop_out"]
    # one per block of 1 / rate windows: 80 windows - 20 warm-up = 6 blocks
    assert len(order) == 6


def _valid_per_window(messages, key=lambda m: True) -> Counter:
    seen, counts = set(), Counter()
    for m in messages:
        if m.kind is MessageKind.MALFORMED or m.transaction_id in seen:
            continue
        seen.add(m.transaction_id)
        if key(m):
            counts[_window_of(m)] += 1
    return counts


def test_a_volume_spike_multiplies_one_category_by_ten(streams):
    base, injected, truth = streams
    for spike in (a for a in truth.anomalies if a.scenario == "volume_spike"):
        (category,) = spike.series["category"]
        w = window(spike.start)

        def of(m, category=category):
            return orjson.loads(m.data).get("category") == category

        before = _valid_per_window(base, of)[w]
        after = _valid_per_window(injected, of)[w]
        assert after == SPIKE_FACTOR * before
        assert spike.transactions == after
        # the rest of the window is untouched
        assert (_valid_per_window(injected)[w] - after) == (_valid_per_window(base)[w] - before)


def test_a_burst_adds_large_amounts_at_one_merchant(streams):
    base, injected, truth = streams
    base_ids = {m.transaction_id for m in base}
    for burst in (a for a in truth.anomalies if a.scenario == "amount_burst"):
        extra = [m for m in injected if m.kind is MessageKind.VALID and m.transaction_id not in base_ids
                 and _window_of(m) == window(burst.start)]
        assert len(extra) == burst.transactions == max(5, round(10 * 30 * 0.01))
        low, high = (Decimal(str(x)) for x in BURST_AMOUNTS)
        assert all(low <= m.amount <= high for m in extra)
        assert len({orjson.loads(m.data)["merchant_id"] for m in extra}) == 1


def test_a_drop_out_loses_nine_in_ten_messages_of_its_window(streams):
    base, injected, truth = streams
    for drop in (a for a in truth.anomalies if a.scenario == "drop_out"):
        w = window(drop.start)
        before = sum(1 for m in base if _window_of(m) == w)
        after = sum(1 for m in injected if _window_of(m) == w)
        assert after == pytest.approx(before * (1 - DROP_FRACTION), abs=before * 0.06)
        assert drop.everything


def test_the_manifest_round_trips_and_lists_the_extreme_amounts(streams, tmp_path):
    _, injected, truth = streams
    truth.to_json(tmp_path / "truth.json")
    again = Truth.from_json(tmp_path / "truth.json")
    assert again.anomalies == truth.anomalies and again.extreme_amounts == truth.extreme_amounts
    extremes = _valid_per_window(injected, lambda m: m.amount == Decimal("999999.99"))
    assert {window(e.start) for e in truth.extreme_amounts} == set(extremes)


def _finding(start, dimension=None, value=None):
    return {"window_start_time": start, "dimension": dimension, "dimension_value": value,
            "metric": "total_transactions"}


def test_precision_and_recall_as_defined():
    t0 = START
    spike = LabelledWindow(t0, t0 + timedelta(seconds=30), "volume_spike", 10,
                           {"category": ("travel",)})
    drop = LabelledWindow(t0 + timedelta(minutes=5), t0 + timedelta(minutes=5, seconds=30),
                          "drop_out", 3, {}, everything=True)
    extreme = LabelledWindow(t0 + timedelta(minutes=9), t0 + timedelta(minutes=9, seconds=30),
                             "extreme_amount", 1, {"category": ("home",)})
    rows = [
        _finding(t0), _finding(t0, "category", "travel"),  # both explained by the spike
        {**_finding(t0), "metric": "total_amount_sum"},  # same series and window: one finding
        _finding(t0, "category", "grocery"),  # not the spiked category: wrong
        _finding(drop.start, "category", "fuel"),  # a drop-out touches every series
        _finding(extreme.start),  # the extreme amount: neither right nor wrong
        _finding(t0 + timedelta(hours=2)),  # outside the period: ignored
    ]
    period = (t0, t0 + timedelta(hours=1))
    q = score_findings([spike, drop], [extreme], rows, period)
    assert (q.right, q.wrong, q.extreme) == (3, 1, 1)
    assert q.precision == pytest.approx(3 / 4)
    assert (q.found, q.injected, q.recall) == (2, 2, 1.0)
    q = score_findings([spike, drop], [extreme], rows[:2], period)
    assert q.recall == 0.5 and q.missed == (drop,) and q.precision == 1.0


def test_bad_anomaly_settings_are_refused(tmp_path, in_process):
    with pytest.raises(SimulationConfigError) as error:
        replace(BASE, anomalies=("meteor",))
    assert error.value.field == "anomalies"
    with pytest.raises(SimulationConfigError) as error:
        replace(BASE, anomalies=("drop_out",), anomaly_dimension="amount")
    assert error.value.field == "anomaly_dimension"
    cli = in_process(simulator_main, ["--target", "stdout", "--count", "1",
                                      "--anomalies", "volume_spike,meteor"], cwd=tmp_path)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "meteor" in cli.stderr

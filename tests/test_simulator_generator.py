"""The stream: deterministic per seed, clocked as documented, config validated up front."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import takewhile

import pytest

from simulator import MessageKind, SimulationConfig, SimulationConfigError, generate
from simulator.config import UNPACED_EVENT_RATE
from simulator.generator import send_offsets
from txpipe.contract import Transaction, validate

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def config(**changes) -> SimulationConfig:
    base = dict(seed=7, count=3000, rate=200.0, start=START, duplicate_rate=0.05,
                malformed_rate=0.02, late_rate=0.01, late_seconds=120, jitter_seconds=2.0)
    base.update(changes)
    return SimulationConfig(**base)


def stream_bytes(cfg: SimulationConfig) -> list[tuple[bytes, dict[str, str]]]:
    return [(m.data, m.attributes) for m in generate(cfg)]


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert stream_bytes(config()) == stream_bytes(config())
    assert stream_bytes(config()) != stream_bytes(config(seed=8))


def test_transaction_ids_differ_between_starts_so_live_runs_never_collide():
    first = {m.transaction_id for m in generate(config(count=500))}
    later = {m.transaction_id for m in generate(config(count=500, start=START + timedelta(hours=1)))}
    assert first.isdisjoint(later - {None})


def test_count_and_duration_bound_the_stream():
    assert len(list(generate(config(count=1234)))) == 1234
    assert len(list(generate(config(count=0, duration=10.0, rate=50.0)))) == 500
    assert len(list(generate(config(count=100, duration=10.0, rate=50.0)))) == 100


def test_send_offsets_follow_the_rate_and_event_times_trail_them():
    cfg = config(count=2000, rate=100.0, jitter_seconds=2.0, late_rate=0.05, late_seconds=120)
    for m in generate(cfg):
        if m.kind is MessageKind.DUPLICATE:
            continue
        assert m.send_offset == pytest.approx(m.index / 100.0)
        if m.kind is MessageKind.MALFORMED:
            assert m.event_time is None
            continue
        lag = (START + timedelta(seconds=m.send_offset) - m.event_time).total_seconds()
        if m.late:
            assert 120 - 0.001 <= lag <= 122.001
        else:
            assert -0.001 <= lag <= 2.001


def test_jitter_puts_events_out_of_order():
    times = [m.event_time for m in generate(config(duplicate_rate=0, malformed_rate=0, late_rate=0))]
    assert any(b < a for a, b in zip(times, times[1:], strict=False))
    in_order = [m.event_time for m in generate(config(jitter_seconds=0, duplicate_rate=0,
                                                      malformed_rate=0, late_rate=0))]
    assert in_order == sorted(in_order)


def test_valid_messages_say_what_they_are_labelled():
    for m in generate(config(count=2000)):
        if m.kind is MessageKind.MALFORMED:
            continue
        parsed = validate(m.data)
        assert isinstance(parsed, Transaction)
        assert (parsed.transaction_id, parsed.amount, parsed.event_time) == (
            m.transaction_id, m.amount, m.event_time)
        assert m.attributes["transaction_id"] == m.transaction_id


def test_every_message_has_a_readable_event_ts_attribute():
    for m in generate(config(count=2000, malformed_rate=0.3)):
        assert datetime.fromisoformat(m.attributes["event_ts"]).tzinfo is not None
        assert m.attributes["transaction_id"]


def test_rate_zero_uses_the_nominal_clock():
    offsets = [m.send_offset for m in generate(config(rate=0.0, count=5))]
    assert offsets == [i / UNPACED_EVENT_RATE for i in range(5)]


def test_daily_rhythm_is_busier_at_the_peak_than_at_the_trough():
    def messages_in_first_minute(hour: int) -> int:
        cfg = SimulationConfig(rate=10.0, start=START.replace(hour=hour), daily_rhythm=0.6)
        return sum(1 for _ in takewhile(lambda offset: offset < 60.0, send_offsets(cfg)))

    peak, trough = messages_in_first_minute(14), messages_in_first_minute(2)
    assert peak == pytest.approx(60 * 10 * 1.6, rel=0.02)
    assert trough == pytest.approx(60 * 10 * 0.4, rel=0.02)


def test_open_start_is_fixed_to_now_when_the_stream_begins():
    before = datetime.now(UTC)
    first = next(generate(SimulationConfig(count=1, rate=0)))
    assert before - timedelta(seconds=1) <= first.event_time <= datetime.now(UTC)


@pytest.mark.parametrize(("changes", "field"), [
    ({"rate": -1.0}, "rate"),
    ({"rate": float("nan")}, "rate"),
    ({"count": -5}, "count"),
    ({"duplicate_rate": 1.5}, "duplicate_rate"),
    ({"duplicate_rate": 0.6, "malformed_rate": 0.4}, "malformed_rate"),
    ({"late_rate": -0.1}, "late_rate"),
    ({"late_seconds": -1}, "late_seconds"),
    ({"window_size": 0}, "window_size"),
    ({"duration": 0}, "duration"),
    ({"daily_rhythm": 1.0}, "daily_rhythm"),
    ({"start": datetime(2026, 1, 1)}, "start"),
    ({"seed": -1}, "seed"),
])
def test_bad_settings_are_refused_with_the_field_named(changes, field):
    with pytest.raises(SimulationConfigError) as error:
        config(**changes)
    assert error.value.field == field
    assert "\n" not in str(error.value)


def test_config_round_trips_through_a_dict_at_millisecond_precision():
    cfg = config(start=datetime(2026, 11, 27, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))))
    assert cfg.start == datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SimulationConfigError):
        SimulationConfig.from_dict({"sede": 1})

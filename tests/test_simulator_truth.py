"""The ground-truth manifest equals an independent pandas recount of the bytes actually emitted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest
from recount import Tx, recount_fixed_windows, unique_transactions

from simulator import MessageKind, SimulationConfig, Truth, TruthBuilder, generate, write
from txpipe.contract import Invalid, Reason, validate

START = datetime(2026, 11, 27, 10, 0, 7, tzinfo=UTC)
CFG = SimulationConfig(seed=21, count=12_000, rate=150.0, start=START, duplicate_rate=0.05,
                       malformed_rate=0.03, late_rate=0.02, late_seconds=95, jitter_seconds=3.0,
                       window_size=30)


@pytest.fixture(scope="module")
def emitted(tmp_path_factory) -> tuple[list[bytes], Truth]:
    """The stream as written to a JSON-lines file, and the truth the writer built alongside."""
    path = tmp_path_factory.mktemp("truth") / "stream.jsonl"
    builder = TruthBuilder(CFG.window_size)
    stats = write(CFG, path, truth=builder)
    assert stats.published == CFG.count and stats.failed == 0
    return path.read_bytes().split(b"\n")[:-1], builder.build(stats.config)


def test_truth_equals_a_pandas_recount_of_the_emitted_lines(emitted):
    lines, truth = emitted
    assert len(lines) == CFG.count
    verdicts = [validate(line) for line in lines]
    deliveries = [Tx(v.transaction_id, v.amount, v.event_time) for v in verdicts
                  if not isinstance(v, Invalid)]
    unique = unique_transactions(deliveries)
    expected = recount_fixed_windows(unique, CFG.window_size)

    actual = pd.DataFrame(
        {"window_end_time": pd.to_datetime([w.end for w in truth.windows], utc=True),
         "total_transactions": [w.count for w in truth.windows],
         "total_amount_sum": [w.sum for w in truth.windows],
         "min_amount": [w.min for w in truth.windows],
         "max_amount": [w.max for w in truth.windows],
         "avg_transaction_amount": [w.avg for w in truth.windows]},
        index=pd.DatetimeIndex([w.start for w in truth.windows], name="window_start_time"),
    )
    pd.testing.assert_frame_equal(actual[expected.columns], expected, check_index_type=False,
                                  check_freq=False)
    assert all((w.end - w.start).total_seconds() == 30 for w in truth.windows)

    assert truth.messages == len(lines)
    assert truth.valid == len(unique)
    assert truth.duplicates == len(deliveries) - len(unique)
    bad = Counter(v.reason.value for v in verdicts if isinstance(v, Invalid))
    assert truth.malformed == {r.value: bad.get(r.value, 0) for r in Reason}
    assert all(n > 0 for n in truth.malformed.values())
    assert sum(w.duplicates for w in truth.windows) == truth.duplicates


def test_late_counts_match_the_labels(emitted):
    _, truth = emitted
    late = [m for m in generate(CFG) if m.kind is MessageKind.VALID and m.late]
    assert truth.late == len(late) > 0
    per_window = Counter(int(m.event_time.timestamp()) // 30 * 30 for m in late)
    assert {int(w.start.timestamp()): w.late for w in truth.windows if w.late} == dict(per_window)


def test_truth_from_messages_equals_the_builder_fed_by_the_writer(emitted):
    _, truth = emitted
    assert Truth.from_messages(CFG, generate(CFG)) == truth


def test_truth_round_trips_through_json_with_exact_decimal_strings(emitted, tmp_path):
    _, truth = emitted
    path = tmp_path / "truth.json"
    truth.to_json(path)
    assert Truth.from_json(path) == truth
    text = path.read_text()
    assert '"sum": "' in text and '"min": "' in text  # money as exact strings, never floats
    data = truth.to_dict()
    assert Decimal(data["total_sum"]) == sum(w.sum for w in truth.windows)
    assert data["config"]["seed"] == 21 and data["config"]["start"] == "2026-11-27T10:00:07.000Z"


def test_a_resend_whose_original_was_lost_counts_once():
    messages = list(generate(SimulationConfig(seed=3, count=3000, rate=0, duplicate_rate=0.2,
                                              start=START)))
    duplicate = next(m for m in messages if m.kind is MessageKind.DUPLICATE)
    delivered = [m for m in messages
                 if not (m.kind is MessageKind.VALID and m.transaction_id == duplicate.transaction_id)]
    truth = Truth.from_messages(CFG, delivered)
    everything = Truth.from_messages(CFG, messages)
    assert truth.valid == everything.valid
    assert truth.total_sum == everything.total_sum

"""Injected faults: each bad record fails for the reason it is labelled with, at the rates asked."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from simulator import MessageKind, SimulationConfig, generate
from simulator.faults import VARIANTS, Record, break_record
from txpipe.contract import Invalid, Reason, encode_message, validate

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
N = 20_000


def record(amount: str = "12.34") -> Record:
    optional = {"user_id": "u-000001", "merchant_id": "m-00001", "category": "grocery",
                "country": "ES", "payment_method": "debit_card", "currency": "EUR"}
    data, attributes = encode_message("6f1c7d1e-3a55-4c1e-9a86-4d4bb1f5e0a2", Decimal(amount),
                                      START, **optional)
    return Record(data, "6f1c7d1e-3a55-4c1e-9a86-4d4bb1f5e0a2", Decimal(amount),
                  attributes["event_ts"], optional)


@pytest.mark.parametrize(("reason", "name"), [
    (reason, name) for reason, variants in VARIANTS.items() for name in variants
])
@pytest.mark.parametrize("amount", ["12.34", "0.10", "999999.99"])
def test_every_variant_fails_for_its_reason(reason, name, amount):
    for seed in range(5):
        bad = VARIANTS[reason][name](random.Random(seed), record(amount))
        verdict = validate(bad)
        assert isinstance(verdict, Invalid), (name, bad)
        assert verdict.reason is reason, (name, bad, verdict.message)
        assert b"\n" not in bad


def test_every_reason_has_variants_and_the_labels_cover_them_all():
    assert set(VARIANTS) == set(Reason)
    seen = Counter(break_record(random.Random(1), reason, record())[0] for reason in Reason)
    assert len(seen) == len(Reason)


@pytest.fixture(scope="module")
def stream():
    cfg = SimulationConfig(seed=11, count=N, rate=500.0, start=START, duplicate_rate=0.05,
                           malformed_rate=0.02, late_rate=0.01, late_seconds=120)
    return list(generate(cfg))


def test_fault_rates_are_within_tolerance(stream):
    kinds = Counter(m.kind for m in stream)
    # Binomial standard deviation at N = 20k: ~0.15 % for 5 %, ~0.1 % for 2 %; allow 4 sigma.
    assert kinds[MessageKind.DUPLICATE] / N == pytest.approx(0.05, abs=0.006)
    assert kinds[MessageKind.MALFORMED] / N == pytest.approx(0.02, abs=0.004)
    valid = [m for m in stream if m.kind is MessageKind.VALID]
    assert sum(m.late for m in valid) / len(valid) == pytest.approx(0.01, abs=0.003)


def test_malformed_records_spread_over_every_reason_and_are_labelled_right(stream):
    bad = [m for m in stream if m.kind is MessageKind.MALFORMED]
    reasons = Counter(m.reason for m in bad)
    assert set(reasons) == set(Reason)
    assert max(reasons.values()) - min(reasons.values()) <= 1  # round robin
    for m in bad:
        verdict = validate(m.data)
        assert isinstance(verdict, Invalid) and verdict.reason is m.reason, (m.variant, m.data)
    # Including the hard cases the pipeline must survive.
    variants = {m.variant for m in bad}
    assert {"latin1_bytes", "nan", "infinity", "amount_as_string", "negative", "zero",
            "no_offset", "array_of_object", "number", "absent_field"} <= variants


def test_duplicates_are_byte_identical_resends_of_recent_valid_messages(stream):
    first_seen: dict[bytes, int] = {}
    for m in stream:
        if m.kind is MessageKind.VALID:
            first_seen[m.data] = m.index
        elif m.kind is MessageKind.DUPLICATE:
            original = first_seen[m.data]  # an earlier valid message, byte for byte
            assert original < m.index
            assert m.index - original < 1000
            assert m.attributes == {"event_ts": m.attributes["event_ts"],
                                    "transaction_id": m.transaction_id}

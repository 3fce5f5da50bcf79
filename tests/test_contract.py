"""The message contract and the parse step: every dead-letter reason, UTC conversion, exact
amounts, and a parse pipeline that keeps every broken input (none crashes, none vanishes)."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import orjson
import pytest
from apache_beam.transforms import window
from collect import Outputs
from hypothesis import given, settings
from hypothesis import strategies as st
from recount import BASE, NUMBER_SPELLINGS, Tx, bad_records, expected_payload, spell_message

from txpipe import metrics
from txpipe.contract import (
    ATTR_EVENT_TS,
    ATTR_TRANSACTION_ID,
    MAX_PAYLOAD_CHARS,
    Invalid,
    Reason,
    Transaction,
    encode_message,
    parse_message,
    validate,
)
from txpipe.parse import ParseTransactions
from txpipe.windowing import WindowSpec


def msg(timestamp: str = "2026-11-27T10:00:00Z", amount: str = "1.00", **extra) -> bytes:
    body = f'{{"transaction_id": "t1", "amount": {amount}, "timestamp": "{timestamp}"'
    body += "".join(f', "{k}": {v}' for k, v in extra.items())
    return (body + "}").encode()


@pytest.mark.parametrize(("raw", "reason"), bad_records(big=True),
                         ids=lambda v: v[:40].decode("utf-8", "replace") if isinstance(v, bytes)
                         else v)
def test_every_bad_record_gets_its_reason(raw, reason):
    verdict = validate(raw)
    assert isinstance(verdict, Invalid)
    assert verdict.reason is Reason(reason)
    assert verdict.message and "\n" not in verdict.message


def test_the_catalogue_covers_every_reason():
    assert {reason for _, reason in bad_records()} == {r.value for r in Reason}


def test_str_input_is_validated_like_bytes():
    for raw, reason in bad_records():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert validate(text).reason is Reason(reason), raw


def test_a_leading_byte_order_mark_is_ignored():
    # RFC 8259 lets a parser ignore one; Windows tools write one before a file's first line.
    rng = random.Random(8)
    for i in range(50):
        tx = Tx(f"bom-{i}", Decimal(rng.randrange(1, 10**6)).scaleb(-2), BASE)
        raw = spell_message(tx, rng)
        assert parse_message(b"\xef\xbb\xbf" + raw) == parse_message(raw)
        assert parse_message("\ufeff" + raw.decode()) == parse_message(raw)
    # only in front: anywhere else it is not JSON
    for spoiled in (b" \xef\xbb\xbf" + raw, raw[:1] + b"\xef\xbb\xbf" + raw[1:],
                    b"\xef\xbb\xbf\xef\xbb\xbf" + raw):
        assert validate(spoiled).reason is Reason.MALFORMED_JSON, spoiled
    # what a mark hides is judged as it would be without it
    for raw, reason in bad_records():
        assert validate(b"\xef\xbb\xbf" + raw).reason is Reason(reason), raw


@pytest.mark.parametrize(("spelled", "utc"), [
    ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T10:00:00z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27t10:00:00z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T12:00:00+02:00", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T04:30:00-05:30", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T10:00:00-00:00", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-28T01:30:00+15:30", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T00:30:00-09:30", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-11-27T01:00:00.250+01:00", datetime(2026, 11, 27, 0, 0, 0, 250_000, tzinfo=UTC)),
    ("2026-11-26T23:59:59.5-00:30", datetime(2026, 11, 27, 0, 29, 59, 500_000, tzinfo=UTC)),
    ("2026-11-27T10:00:00.1Z", datetime(2026, 11, 27, 10, 0, 0, 100_000, tzinfo=UTC)),
    ("2026-11-27T10:00:00.123456Z", datetime(2026, 11, 27, 10, 0, 0, 123_456, tzinfo=UTC)),
    # beyond microseconds: truncated, so an event never moves into a later window
    ("2026-11-27T10:00:29.999999999Z", datetime(2026, 11, 27, 10, 0, 29, 999_999, tzinfo=UTC)),
    ("2026-11-27T10:00:00.1234567Z", datetime(2026, 11, 27, 10, 0, 0, 123_456, tzinfo=UTC)),
    ("2026-11-27T10:00:29.9999999999999Z", datetime(2026, 11, 27, 10, 0, 29, 999_999, tzinfo=UTC)),
    ("2026-11-27 10:00:00Z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ("2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
    ("2028-02-29T23:00:00-01:00", datetime(2028, 3, 1, 0, 0, tzinfo=UTC)),
])
def test_timestamps_are_converted_to_utc(spelled, utc):
    tx = validate(msg(spelled))
    assert isinstance(tx, Transaction), tx
    assert tx.event_time == utc
    assert tx.event_time.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("literal", "exact"), [
    ("0.10", "0.10"), ("0.1", "0.1"), ("1e-1", "0.1"), ("10E-2", "0.1"), ("0.20", "0.2"),
    ("999999.99", "999999.99"), ("99999999.99", "99999999.99"), ("100", "100"),
    ("100.0", "100"), ("1e2", "100"), ("0.000000001", "0.000000001"),
    ("999999999999999", "999999999999999"), ("123456789.123456", "123456789.123456"),
    ("0.30000000000000", "0.3"), ("33.33", "33.33"),
])
def test_amounts_are_exact_decimals(literal, exact):
    tx = validate(msg(amount=literal))
    assert isinstance(tx, Transaction), tx
    assert isinstance(tx.amount, Decimal)
    assert tx.amount == Decimal(exact)


def test_unknown_fields_are_ignored_and_optional_fields_kept():
    tx = validate(msg(category='"food"', currency="null", extra='{"deep": [1, {"x": null}]}'))
    assert isinstance(tx, Transaction)
    assert tx.category == "food"
    assert tx.currency is None


def test_encode_message_round_trips_with_attributes():
    moment = datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC)
    data, attrs = encode_message("abc", Decimal("999999.99"), moment, category="food")
    assert orjson.loads(data)["timestamp"] == "2026-11-27T10:00:00.250Z"
    assert b'"amount":999999.99' in data  # a JSON number with exactly the Decimal's digits
    tx = validate(data)
    assert (tx.transaction_id, tx.amount, tx.event_time, tx.category) == (
        "abc", Decimal("999999.99"), moment, "food")
    assert attrs == {ATTR_EVENT_TS: "2026-11-27T10:00:00.250Z", ATTR_TRANSACTION_ID: "abc"}
    with pytest.raises(ValueError):
        encode_message("x", Decimal("-1"), moment)
    with pytest.raises(ValueError):
        encode_message("x", Decimal("1"), moment, not_a_field="y")


def test_spelled_messages_mean_their_ground_truth():
    """The test generator itself: odd spellings keep the instant and the amount."""
    rng = random.Random(7)
    for i in range(3000):
        tx = Tx(f"t{i}", Decimal(rng.choice(["0.10", "0.20", "999999.99", "0.000000001", "5"])),
                BASE + timedelta(microseconds=rng.randrange(-10**9, 10**9)))
        parsed = validate(spell_message(tx, rng))
        assert (parsed.transaction_id, parsed.amount, parsed.event_time) == (
            tx.transaction_id, tx.amount, tx.event_time)


@pytest.mark.parametrize(("event", "window_start"), [
    ("2026-11-27T10:00:29.999999Z", "2026-11-27T10:00:00Z"),
    ("2026-11-27T10:00:30Z", "2026-11-27T10:00:30Z"),  # exactly the end: the next window
    ("2026-11-27T11:00:30+01:00", "2026-11-27T10:00:30Z"),
    ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z"),
    ("2026-11-27T09:59:59.999999Z", "2026-11-27T09:59:30Z"),
])
def test_window_boundaries(event, window_start):
    tx = validate(msg(event))
    ts = beam.utils.timestamp.Timestamp(micros=(tx.event_time - datetime(
        1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    fn = WindowSpec(size_seconds=30).window_fn()
    [win] = fn.assign(window.WindowFn.AssignContext(ts))
    start = datetime.fromisoformat(window_start.replace("Z", "+00:00"))
    assert win.start.micros == (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1)
    assert win.end.micros - win.start.micros == 30_000_000


# --- the parse DoFn in a real pipeline ----------------------------------------------------

@pytest.fixture(scope="module")
def parsed():
    """One batch pipeline over every bad record plus a few valid messages."""
    bad = bad_records(big=True)
    valid = [encode_message(f"ok{i}", Decimal("0.10"), BASE + timedelta(seconds=i))[0]
             for i in range(5)]
    out = Outputs()
    pipeline = beam.Pipeline()
    stages = pipeline | beam.Create([raw for raw, _ in bad] + valid) | ParseTransactions()
    stages.valid | "KeepValid" >> out.keep("valid", timestamp=True)
    stages.dead_letters | "KeepDead" >> out.keep("dead")
    result = pipeline.run()
    result.wait_until_finish()
    return bad, valid, out["valid"], out["dead"], metrics.read_counters(result)


def test_parse_pipeline_keeps_every_input(parsed):
    bad, valid, got_valid, got_dead, counters = parsed
    assert sorted(tx.transaction_id for tx, _ in got_valid) == [f"ok{i}" for i in range(5)]
    expected = Counter((reason, expected_payload(raw)) for raw, reason in bad)
    assert Counter((d["reason"], d["payload"]) for d in got_dead) == expected
    assert counters[metrics.READ] == len(bad) + len(valid)
    assert counters[metrics.VALID] == len(valid)
    assert counters[metrics.DEAD_LETTERED] == len(bad)
    for reason, n in Counter(reason for _, reason in bad).items():
        assert counters[metrics.dead_letter_counter(reason)] == n


def test_valid_elements_carry_their_event_time(parsed):
    _, _, got_valid, _, _ = parsed
    for tx, ts in got_valid:
        assert ts.micros == (tx.event_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            microseconds=1)


def test_dead_letters_are_complete_rows(parsed):
    _, _, _, got_dead, _ = parsed
    before = datetime.now(UTC)
    for dead in got_dead:
        assert set(dead) == {"reason", "message", "payload", "seen_at"}
        assert dead["message"] and "\n" not in dead["message"]
        assert len(dead["payload"]) <= MAX_PAYLOAD_CHARS
        assert dead["seen_at"].tzinfo is not None and dead["seen_at"] <= before
    huge = [d for d in got_dead if d["payload"].startswith('{"transaction_id": "huge"')]
    assert len(huge) == 1 and len(huge[0]["payload"]) == MAX_PAYLOAD_CHARS
    not_utf8 = [d for d in got_dead if d["payload"].startswith("\\xff\\xfe")]
    assert len(not_utf8) == 1 and not_utf8[0]["reason"] == "malformed_json"


def _reference_amount_rule(amount: Decimal) -> str | None:
    """The amount rule read straight off the contract (README): which check fails first."""
    import math

    if not amount.is_finite() or math.isinf(float(amount)):
        return "finite"
    if amount <= 0:
        return "> 0"
    _, digits, exponent = amount.normalize().as_tuple()
    if len(digits) > 15:
        return "significant digits"
    if -exponent > 9:
        return "decimal places"
    if amount >= Decimal("1e15"):
        return "too large"
    return None


@given(st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(lambda digits, exponent: Decimal(digits).scaleb(exponent),
              st.integers(-10**20, 10**20), st.integers(-30, 30)),
    st.builds(lambda digits, zeros: Decimal(f"{digits}.{'0' * zeros}"),
              st.integers(1, 10**16), st.integers(0, 25)),
))
@settings(max_examples=400, deadline=None)
def test_the_amount_check_is_the_contracts_rule(amount):
    """check_amount reckons digits and places cheaply where it can: never differently."""
    from txpipe.contract import ContractError, check_amount

    expected = _reference_amount_rule(amount)
    try:
        check_amount(amount)
        verdict = None
    except ContractError as exc:
        verdict = next(k for k in ("finite", "> 0", "significant digits", "decimal places",
                                   "too large")
                       if k in str(exc))
    assert verdict == expected, amount


_JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6).map(json.dumps), NUMBER_SPELLINGS,
    st.sampled_from(["[1]", "{}", '{"a": 1.5}', "[]", '"12.5"', "-0", "0.0", "1e-9", "1E+2"]),
).map(lambda v: "null" if v is None else ("true" if v is True else
                                           ("false" if v is False else v)))
_TIMESTAMPS = st.one_of(
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456+02:00",
                     "2026-11-27 10:00:00.1234567-05:30", "2026-11-27T10:00:00",
                     "2026-11-27t10:00:00z", "0001-01-01T00:00:00+01:00", "garbage"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
).map(json.dumps)


@given(amount=_JSON_VALUES, timestamp=st.one_of(_TIMESTAMPS, _JSON_VALUES),
       tx_id=st.one_of(st.text(max_size=8).map(json.dumps), _JSON_VALUES),
       category=st.one_of(st.just(None), _JSON_VALUES), spacing=st.sampled_from(["", " ", "\n"]),
       order=st.permutations(range(4)))
@settings(max_examples=500, deadline=None)
def test_the_schema_decides_as_the_contract_reads_field_by_field(amount, timestamp, tx_id,
                                                                 category, spacing, order):
    """Any spelling a producer may send, decoded by the schema (msgspec, in C) or read by the
    standard library and checked field by field: the same verdict, the same amount to the
    digit and the same instant."""
    from txpipe.contract import ContractError, _check_fields, parse_amount, parse_timestamp

    fields = [("transaction_id", tx_id), ("amount", amount), ("timestamp", timestamp),
              ("category", category)]
    fields = [fields[i] for i in order if fields[i][1] is not None]
    raw = ("{" + f",{spacing}".join(f'"{k}":{spacing}{v}' for k, v in fields) + "}").encode()
    verdict = validate(raw)
    obj = json.loads(raw, parse_int=Decimal, parse_float=Decimal)
    try:
        _check_fields(obj)
        expected = None
    except ContractError as exc:
        expected = exc.reason
    if expected is None:
        assert not isinstance(verdict, Invalid), (raw, verdict)
        assert verdict.amount == parse_amount(obj["amount"]), raw
        assert str(verdict.amount) == str(obj["amount"]), raw  # the digits as written
        assert verdict.event_time == parse_timestamp(obj["timestamp"]), raw
    else:
        assert isinstance(verdict, Invalid) and verdict.reason is expected, (raw, verdict)

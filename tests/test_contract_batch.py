"""judge_all, the batched consumer's judge: message for message the verdict of judge itself —
the same ids, amounts to the digit, instants and optional values for what it accepts, the same
reason and words for what it refuses, in input order."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from recount import BASE, NUMBER_SPELLINGS, Tx, bad_records, spell_message

from txpipe.contract import (
    _DECODER,
    MAX_AMOUNT_DIGITS,
    MAX_AMOUNT_SCALE,
    MAX_TRANSACTION_ID_CHARS,
    ContractError,
    _at_once,
    check_amount,
    event_micros,
    judge,
    judge_all,
)

FIELD = "category"


def expected(raws: list, field: str | None = FIELD):
    """What judge says of each message, as judge_all reports it."""
    accepted, refused = [], []
    for raw in raws:
        try:
            message, amount, micros = judge(raw)
        except Exception as exc:  # a bug too becomes a dead letter (txpipe.parse.rejected)
            refused.append((raw, _reason(exc), str(exc)))
            continue
        accepted.append((message.transaction_id, str(amount), micros,
                         (getattr(message, field) or "") if field else None))
    return accepted, refused


def verdicts(raws: list, field: str | None = FIELD):
    ids, amounts, micros, values, refused = judge_all(raws, field)
    assert micros.dtype.kind == "i" and len(micros) == len(ids) == len(amounts)
    accepted = list(zip(ids, amounts, micros.tolist(), values or [None] * len(ids), strict=True))
    return accepted, [(raw, _reason(exc), str(exc)) for raw, exc in refused]


def _reason(exc: Exception):
    return exc.reason if isinstance(exc, ContractError) else type(exc)


def test_every_bad_record_is_refused_as_judge_refuses_it():
    raws = [raw for raw, _ in bad_records(big=True)]
    assert verdicts(raws) == expected(raws)
    assert not verdicts(raws)[0]


def test_spelled_messages_and_bad_ones_mixed_keep_their_order():
    rng = random.Random(7)
    txs = [Tx(f"t{i}", Decimal(rng.randint(1, 10**7)) / 100, BASE) for i in range(300)]
    raws = [spell_message(tx, rng) for tx in txs]
    bad = [raw for raw, _ in bad_records()]
    texts = [raw.decode("utf-8", "surrogateescape") for raw in raws[::7] + bad[::2]]
    for raw in bad + texts:  # text too, as a source of str messages gives them
        raws.insert(rng.randrange(len(raws)), raw)
    got, want = verdicts(raws), expected(raws)
    assert got == want
    assert len(got[0]) >= len(txs)


def test_no_field_asked_keeps_no_values():
    raws = [b'{"transaction_id": "a", "amount": 2, "timestamp": "2026-11-27T10:00:00Z"}']
    ids, _, _, values, _ = judge_all(raws)
    assert ids == ["a"] and values is None
    assert judge_all([]).ids == []


_AMOUNTS = st.one_of(
    NUMBER_SPELLINGS,
    st.sampled_from(['"12.5"', "null", "true", "[1]", "-0", "0.0", "1e-9", "1E+2", "0.000000001",
                     "999999999999999", "99999999999999.9", "1e400", "100000000000000"]),
)
_TIMESTAMPS = st.one_of(
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456+02:00",
                     "2026-11-27T10:00:00.1234567-05:30", "2026-11-27T10:00:00",
                     "2026-11-27t10:00:00z", "0001-01-01T00:00:00+01:00",
                     "0001-01-02T00:00:00Z", "9999-12-30T23:59:59.999999Z",
                     "9999-12-30T23:59:59.999999-00:01", "0001-01-02T00:00:00+00:01", "garbage"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
).map(json.dumps)
_IDS = st.one_of(st.text(max_size=8), st.sampled_from(["", "   ", "x" * 256, "x" * 257, "é"]))


@given(st.lists(st.tuples(_IDS.map(json.dumps), _AMOUNTS, _TIMESTAMPS,
                          st.one_of(st.none(), st.text(max_size=4).map(json.dumps),
                                    st.just("1")),
                          st.booleans()), max_size=30))
@settings(max_examples=300, deadline=None)
def test_any_spelling_gets_judges_verdict(rows):
    """Amounts at and across every quick-check limit, event times at the contract's first and
    last instants, ids at their length limit, optional fields of any kind: judge's verdicts."""
    raws = []
    for tx_id, amount, timestamp, category, as_text in rows:
        body = f'{{"transaction_id": {tx_id}, "amount": {amount}, "timestamp": {timestamp}'
        if category is not None:
            body += f', "category": {category}'
        raw = (body + "}").encode()
        raws.append(raw.decode() if as_text else raw)
    assert verdicts(raws) == expected(raws)


#: Amounts at the common case's edges: places and digits one short of, at and one past the limits.
_EDGE_AMOUNTS = st.builds(
    lambda whole, frac: f"{whole}.{frac}" if frac else str(whole),
    st.one_of(st.integers(0, 99), st.integers(10**(MAX_AMOUNT_DIGITS - 4), 10**MAX_AMOUNT_DIGITS)),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=3),
              st.text("0123456789", min_size=MAX_AMOUNT_SCALE - 1, max_size=MAX_AMOUNT_SCALE + 1)))


@given(_IDS.map(json.dumps), st.one_of(_AMOUNTS, _EDGE_AMOUNTS), _TIMESTAMPS)
@settings(max_examples=1000, deadline=None)
def test_the_common_case_accepts_only_what_the_rules_one_by_one_accept(tx_id, amount, timestamp):
    """judge and judge_all both take the common case (``_at_once``) first: whatever it accepts,
    the contract's rules one by one (``check_amount``, ``event_micros``, the id's) accept too,
    with the same amount, text and instant."""
    raw = f'{{"transaction_id": {tx_id}, "amount": {amount}, "timestamp": {timestamp}}}'
    try:
        message = _DECODER.decode(raw.encode())
    except msgspec.DecodeError:
        return
    plain = _at_once(message)
    if plain is None:
        return
    number, text, delta = plain
    assert type(message.amount) in (int, Decimal)
    assert check_amount(Decimal(message.amount)) == number and str(number) == text
    assert event_micros(message.timestamp) == delta // timedelta(microseconds=1)
    assert message.transaction_id.strip() and len(message.transaction_id) <= MAX_TRANSACTION_ID_CHARS

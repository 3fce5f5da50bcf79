"""Bad records, one family per dead-letter reason of the contract.

Each variant turns a valid message into one the pipeline must reject for a known reason, so the
ground truth can say how many dead letters of each kind to expect. The variants mimic real bugs
(a producer writing amounts as strings, naive local timestamps, truncated writes, a latin-1
encoder) rather than random noise. None contains a newline: every record stays one JSONL line.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson

from txpipe.contract import MAX_TRANSACTION_ID_CHARS, REQUIRED_FIELDS, Reason

_RAW = "__raw_amount__"


@dataclass(frozen=True)
class Record:
    """A valid message taken apart, for variants to break one piece of."""

    data: bytes  # the valid encoding
    transaction_id: str
    amount: Decimal
    timestamp: str
    optional: dict[str, str]

    def body(self, amount: object = _RAW) -> dict[str, object]:
        return {"transaction_id": self.transaction_id, "amount": amount,
                "timestamp": self.timestamp, **self.optional}


def _dumps(body: dict[str, object], raw_amount: str) -> bytes:
    """JSON with the amount written verbatim (NaN, -0.5, 1e-10 ... as the variant wants)."""
    return orjson.dumps(body).replace(f'"{_RAW}"'.encode(), raw_amount.encode(), 1)


def _with(record: Record, raw_amount: str | None = None, **changes: object) -> bytes:
    body = record.body()
    body.update(changes)
    return _dumps(body, raw_amount if raw_amount is not None else str(record.amount))


Variant = Callable[[random.Random, Record], bytes]


def _drop_field(rng: random.Random, r: Record) -> bytes:
    body = r.body()
    del body[rng.choice(REQUIRED_FIELDS)]
    return _dumps(body, str(r.amount))


def _null_field(rng: random.Random, r: Record) -> bytes:
    return _with(r, **{rng.choice(REQUIRED_FIELDS): None})


def _optional_as_number(rng: random.Random, r: Record) -> bytes:
    return _with(r, **{rng.choice(("user_id", "country", "merchant_id")): rng.randrange(1, 10**6)})


def _epoch_millis(r: Record) -> int:
    moment = datetime.fromisoformat(r.timestamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


VARIANTS: dict[Reason, dict[str, Variant]] = {
    Reason.MALFORMED_JSON: {
        "latin1_bytes": lambda rng, r: r.data[:-1] + b',"note":"caf\xe9 cr\xe8me"}',
        "truncated": lambda rng, r: r.data[: rng.randrange(1, len(r.data) - 1)],
        "trailing_garbage": lambda rng, r: r.data + b"}",
        "trailing_comma": lambda rng, r: r.data[:-1] + b",}",
        "empty": lambda rng, r: b"",
        "plain_text": lambda rng, r: f"transaction {r.transaction_id} of {r.amount}".encode(),
        "python_repr": lambda rng, r: repr(r.body(str(r.amount))).encode(),
    },
    Reason.NOT_AN_OBJECT: {
        "array_of_object": lambda rng, r: b"[" + r.data + b"]",
        "empty_array": lambda rng, r: b"[]",
        "number": lambda rng, r: str(r.amount).encode(),
        "string": lambda rng, r: orjson.dumps(r.transaction_id),
        "null": lambda rng, r: b"null",
        "boolean": lambda rng, r: b"true",
    },
    Reason.MISSING_FIELD: {
        "absent_field": _drop_field,
        "null_field": _null_field,
    },
    Reason.INVALID_TYPE: {
        "amount_as_string": lambda rng, r: _with(r, raw_amount=f'"{r.amount}"'),
        "amount_as_boolean": lambda rng, r: _with(r, raw_amount="true"),
        "amount_as_object": lambda rng, r: _with(r, raw_amount=f'{{"value":{r.amount}}}'),
        "transaction_id_as_number": lambda rng, r: _with(r, transaction_id=rng.randrange(10**9)),
        "blank_transaction_id": lambda rng, r: _with(r, transaction_id="   "),
        "overlong_transaction_id": lambda rng, r: _with(
            r, transaction_id=r.transaction_id * (MAX_TRANSACTION_ID_CHARS // len(r.transaction_id) + 1)),
        "timestamp_as_epoch_number": lambda rng, r: _with(r, timestamp=_epoch_millis(r)),
        "optional_field_as_number": _optional_as_number,
    },
    Reason.INVALID_AMOUNT: {
        "nan": lambda rng, r: _with(r, raw_amount="NaN"),
        "infinity": lambda rng, r: _with(r, raw_amount="Infinity"),
        "negative_infinity": lambda rng, r: _with(r, raw_amount="-Infinity"),
        "negative": lambda rng, r: _with(r, raw_amount=f"-{r.amount}"),
        "zero": lambda rng, r: _with(r, raw_amount=rng.choice(("0", "0.00", "-0.0"))),
        "too_many_digits": lambda rng, r: _with(r, raw_amount="1234567890123456.78"),
        "too_many_decimals": lambda rng, r: _with(r, raw_amount=f"{r.amount:.2f}00000001"),
    },
    Reason.INVALID_TIMESTAMP: {
        "no_offset": lambda rng, r: _with(r, timestamp=r.timestamp.rstrip("Z")),
        "date_only": lambda rng, r: _with(r, timestamp=r.timestamp[:10]),
        "impossible_date": lambda rng, r: _with(r, timestamp=f"{r.timestamp[:5]}02-30{r.timestamp[10:]}"),
        "hour_25": lambda rng, r: _with(r, timestamp=f"{r.timestamp[:11]}25{r.timestamp[13:]}"),
        "epoch_string": lambda rng, r: _with(r, timestamp=str(_epoch_millis(r) // 1000)),
        "rfc2822": lambda rng, r: _with(r, timestamp="Fri, 27 Nov 2026 10:00:00 GMT"),
        "words": lambda rng, r: _with(r, timestamp="yesterday at noon"),
    },
}

#: Every reason, in a fixed order: malformed message k is of reason k mod 6, so any run with
#: six or more bad records covers them all.
REASONS: tuple[Reason, ...] = tuple(Reason)
_NAMES = {reason: tuple(VARIANTS[reason]) for reason in REASONS}


def break_record(rng: random.Random, reason: Reason, record: Record) -> tuple[str, bytes]:
    """A bad version of ``record`` that fails for ``reason``; returns (variant name, bytes)."""
    name = rng.choice(_NAMES[reason])
    return name, VARIANTS[reason][name](rng, record)

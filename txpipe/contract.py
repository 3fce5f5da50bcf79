"""The message contract: one Pub/Sub message is one transaction, a UTF-8 JSON object.

This module is the only definition of what a valid message is. The pipeline validates with
:func:`parse_message`; the simulator builds messages with :func:`encode_message`. It imports
no Beam, so publishers stay light.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import NamedTuple

import orjson

REQUIRED_FIELDS = ("transaction_id", "amount", "timestamp")
OPTIONAL_FIELDS = ("user_id", "merchant_id", "category", "country", "payment_method", "currency")

#: Pub/Sub attributes every publisher sets: the event time (read as the element timestamp by
#: ReadFromPubSub's ``timestamp_attribute``) and the id Dataflow deduplicates on (``id_label``).
ATTR_EVENT_TS = "event_ts"
ATTR_TRANSACTION_ID = "transaction_id"

#: Dead letters keep at most this much of the raw payload, so one huge line cannot bloat sinks.
MAX_PAYLOAD_CHARS = 64 * 1024
MAX_TRANSACTION_ID_CHARS = 256
#: A float carries 15 significant decimal digits exactly; beyond that an amount could drift.
MAX_AMOUNT_DIGITS = 15
#: BigQuery NUMERIC holds 9 fractional digits.
MAX_AMOUNT_SCALE = 9

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# RFC 3339 date-time: a UTC offset is mandatory (hours 00-23, minutes 00-59: Python would
# read +05:60 as +06:00); fractions of a second may have 1 to 9 digits.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
# A run of 16+ digits (dots allowed between them) may be a number with more than 15
# significant digits, which orjson would round to a float (99999999999999999999999 -> 1e23)
# before the digit check could see it; such payloads are parsed exactly instead.
_LONG_NUMBER = re.compile(r"\d[\d.]{15,}")
_LONG_NUMBER_BYTES = re.compile(_LONG_NUMBER.pattern.encode())


class Reason(str, Enum):
    """Why a message became a dead letter."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_TIMESTAMP = "invalid_timestamp"


class Transaction(NamedTuple):
    """A valid transaction: money as an exact Decimal, event time as an aware UTC datetime."""

    transaction_id: str
    amount: Decimal
    event_time: datetime
    user_id: str | None = None
    merchant_id: str | None = None
    category: str | None = None
    country: str | None = None
    payment_method: str | None = None
    currency: str | None = None


class Invalid(NamedTuple):
    """The verdict on a message that breaks the contract."""

    reason: Reason
    message: str


class ContractError(ValueError):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def parse_timestamp(value: object) -> datetime:
    """RFC 3339 text with an explicit offset, converted to UTC."""
    if not isinstance(value, str):
        raise ContractError(Reason.INVALID_TYPE, f"timestamp must be a string, got {_kind(value)}")
    match = _RFC3339.fullmatch(value)
    if not match:
        raise ContractError(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {value[:64]!r} is not RFC 3339 with a UTC offset "
            "(e.g. 2026-11-27T10:00:00.250Z)",
        )
    # Rewritten to the one form every supported Python reads (3.10's fromisoformat knows no
    # "Z" and only 3- or 6-digit fractions): fraction cut to microseconds, never rounded up
    # into the next window.
    fraction, offset = match.group(1), match.group(2)
    text = (f"{value[:10]}T{value[11:19]}{fraction[:7].ljust(7, '0') if fraction else ''}"
            f"{'+00:00' if offset in ('Z', 'z') else offset}")
    try:
        # OverflowError: a valid local time whose UTC is outside years 1-9999.
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ContractError(Reason.INVALID_TIMESTAMP, f"timestamp {value!r}: {exc}") from None


def parse_amount(value: object) -> Decimal:
    """A finite JSON number > 0, recovered exactly as written (up to 15 significant digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ContractError(Reason.INVALID_TYPE, f"amount must be a JSON number, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(Reason.INVALID_AMOUNT, f"amount must be finite, got {value}")
        # repr() is the shortest text that round-trips: for a literal of <= 15 significant
        # digits it is that literal, so no binary-float error enters the sums.
        amount = Decimal(repr(value))
    else:
        amount = Decimal(value)
        if amount.is_finite() and math.isinf(float(amount)):  # 1e400, read exactly: a
            amount = Decimal("Infinity")  # JSON number beyond a double is not finite
    if not amount.is_finite():
        raise ContractError(Reason.INVALID_AMOUNT, f"amount must be finite, got {value}")
    if amount <= 0:
        raise ContractError(Reason.INVALID_AMOUNT, f"amount must be > 0, got {amount}")
    sign, digits, exponent = amount.normalize().as_tuple()
    if len(digits) > MAX_AMOUNT_DIGITS:
        raise ContractError(
            Reason.INVALID_AMOUNT,
            f"amount {amount} has more than {MAX_AMOUNT_DIGITS} significant digits",
        )
    if -exponent > MAX_AMOUNT_SCALE:
        raise ContractError(
            Reason.INVALID_AMOUNT,
            f"amount {amount} has more than {MAX_AMOUNT_SCALE} decimal places",
        )
    return amount


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float, Decimal)) else type(value).__name__
    )


def _loads(raw: bytes | str) -> object:
    long_number = (_LONG_NUMBER_BYTES if isinstance(raw, bytes) else _LONG_NUMBER).search(raw)
    if long_number is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    # orjson is strict; the standard library also reads NaN / Infinity, and with Decimal keeps
    # every digit of a long number, which lets those messages fail as invalid_amount, a
    # clearer reason for users. It also accepts lone surrogates (\ud800), which no sink can
    # encode: those are rejected here.
    try:
        obj = json.loads(raw, parse_int=Decimal, parse_float=Decimal, parse_constant=float)
        json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
    except (ValueError, RecursionError) as exc:
        raise ContractError(Reason.MALFORMED_JSON, f"not valid JSON: {exc}") from None
    return obj


def decode_payload(raw: bytes | str) -> str:
    """The raw payload as text for a dead letter: undecodable bytes shown escaped, truncated."""
    if isinstance(raw, bytes):
        text = raw[: MAX_PAYLOAD_CHARS * 4].decode("utf-8", errors="backslashreplace")
    else:
        text = raw
    return text[:MAX_PAYLOAD_CHARS]


def parse_message(raw: bytes | str) -> Transaction:
    """Validate one message; raise :class:`ContractError` saying why it breaks the contract."""
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(Reason.MALFORMED_JSON, f"payload is not UTF-8: {exc}") from None
    obj = _loads(raw)
    if not isinstance(obj, dict):
        raise ContractError(Reason.NOT_AN_OBJECT, f"message must be a JSON object, got {_kind(obj)}")
    for name in REQUIRED_FIELDS:
        if obj.get(name) is None:
            raise ContractError(Reason.MISSING_FIELD, f"required field {name!r} is missing")
    tx_id = obj["transaction_id"]
    if not isinstance(tx_id, str) or not tx_id.strip():
        raise ContractError(
            Reason.INVALID_TYPE,
            f"transaction_id must be a non-empty string, got {_kind(tx_id)}",
        )
    if len(tx_id) > MAX_TRANSACTION_ID_CHARS:
        raise ContractError(
            Reason.INVALID_TYPE,
            f"transaction_id is longer than {MAX_TRANSACTION_ID_CHARS} characters",
        )
    amount = parse_amount(obj["amount"])
    event_time = parse_timestamp(obj["timestamp"])
    optional = []
    for name in OPTIONAL_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ContractError(
                Reason.INVALID_TYPE, f"{name} must be a string or null, got {_kind(value)}"
            )
        optional.append(value)
    return Transaction(tx_id, amount, event_time, *optional)


#: Bytes that may belong to a number; 16 of them in a row send a message to the exact path.
_NUMBER_BYTES = bytes(1 if chr(i) in "0123456789." else 0 for i in range(256))
_LONG_RUN = b"\x01" * 16
#: "YYYY-MM-DDTHH:MM:SS" -> epoch micros, for prefixes already validated by parse_timestamp.
_SECONDS: dict[str, int] = {}
_SECONDS_MAX = 1 << 16

#: What :func:`parse_fields` returns: transaction id, amount, event time as epoch
#: microseconds, and the optional fields in OPTIONAL_FIELDS order.
Fields = tuple[str, Decimal, int, tuple]


def parse_fields(raw: bytes | str) -> Fields:
    """:func:`parse_message`'s verdict as plain fields, at a fraction of its cost.

    A replay parses every line, so the common message (bytes, a float amount, a UTC
    millisecond timestamp, string fields) takes a fast path; anything else goes through
    :func:`parse_message` itself, so both always agree and errors keep their reasons.
    """
    fields = _fast_fields(raw) if type(raw) is bytes else None
    if fields is not None:
        return fields
    tx = parse_message(raw)
    return tx[0], tx[1], to_micros(tx[2]), tuple(tx[3:])


def _fast_fields(raw: bytes) -> Fields | None:
    """The fields of a common valid message, or None to let the exact path decide."""
    if _LONG_RUN in raw.translate(_NUMBER_BYTES):
        return None  # a long number orjson would round: the exact path reads it
    try:
        obj = orjson.loads(raw)  # also rejects bytes that are not UTF-8
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    get = obj.get
    tx_id, value, ts = get("transaction_id"), get("amount"), get("timestamp")
    if (type(tx_id) is not str or type(value) is not float or type(ts) is not str
            or len(tx_id) > MAX_TRANSACTION_ID_CHARS or not tx_id.strip() or not value > 0):
        return None
    text = repr(value)  # what parse_amount reads: the shortest text that round-trips
    if "e" in text or "n" in text:
        return None  # exponent notation or infinity
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if (len(fraction) > MAX_AMOUNT_SCALE
            or len((whole + fraction).strip("0")) > MAX_AMOUNT_DIGITS):
        return None
    if len(ts) != 24 or ts[19] != "." or ts[23] != "Z":
        return None
    millis = ts[20:23]
    if not (millis.isascii() and millis.isdigit()):
        return None
    base = _SECONDS.get(ts[:19])
    if base is None:
        try:
            base = to_micros(parse_timestamp(ts)) - int(millis) * 1000
        except ContractError:
            return None
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[ts[:19]] = base
    optional = tuple(map(get, OPTIONAL_FIELDS))
    for v in optional:
        if v is not None and type(v) is not str:
            return None
    return tx_id, Decimal(text), base + int(millis) * 1000, optional


def validate(raw: bytes | str) -> Transaction | Invalid:
    """Like :func:`parse_message`, but returns the verdict instead of raising."""
    try:
        return parse_message(raw)
    except ContractError as exc:
        return Invalid(exc.reason, str(exc))


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z``: the form publishers send."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exact (no float on the way)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def encode_message(
    transaction_id: str,
    amount: Decimal | str,
    event_time: datetime,
    **optional: str | None,
) -> tuple[bytes, dict[str, str]]:
    """One message as a publisher sends it: JSON bytes plus the contract's attributes.

    The amount is written as a JSON number with exactly the digits of the Decimal given.
    """
    unknown = set(optional) - set(OPTIONAL_FIELDS)
    if unknown:
        raise ValueError(f"not part of the message contract: {sorted(unknown)}")
    amount_text = str(Decimal(amount))
    if not re.fullmatch(r"\d+(\.\d+)?", amount_text):
        raise ValueError(f"amount must be a plain positive decimal, got {amount_text!r}")
    ts = format_timestamp(event_time)
    body = {"transaction_id": transaction_id, "amount": "__AMOUNT__", "timestamp": ts}
    body.update({k: v for k, v in optional.items() if v is not None})
    data = orjson.dumps(body).replace(b'"__AMOUNT__"', amount_text.encode(), 1)
    return data, {ATTR_EVENT_TS: ts, ATTR_TRANSACTION_ID: transaction_id}

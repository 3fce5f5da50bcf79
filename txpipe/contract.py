"""The message contract: one Pub/Sub message is one transaction, a UTF-8 JSON object.

This module is the only definition of what a valid message is. The pipeline validates with
:func:`parse_message` (a batched consumer with :func:`judge_all`, the same verdicts for a
list of messages without a Transaction each); the simulator builds messages with
:func:`encode_message`. It imports no Beam, so publishers stay light.

The contract is a declared schema, :class:`Message`, decoded by msgspec in C in one call — any
spacing, field order, number spelling, fraction of a second, UTC offset, unknown fields. The
rules a schema library does not express (amount a JSON number and never a string, finite,
> 0 and below 10^15, at most 15 significant digits and 9 decimals; a non-empty id; RFC 3339
with an offset, read by ciso8601, also in C, between the years 1 and 9999 with a day to spare)
are checked right after, on every message alike. Only a message the schema rejects takes a
second look, :func:`_diagnose`, whose one job is to say *why* in the contract's words (reason
and message): it never accepts what the schema refused.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple

import ciso8601
import msgspec
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
#: Amounts stay below 10^15: NUMERIC's 29 integer digits then hold any window's sum (up to
#: 10^14 transactions), and the statistics' decimal arithmetic never overflows.
MAX_AMOUNT_INTEGER_DIGITS = 15

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Event times a day inside the years 1-9999 that datetime and BigQuery TIMESTAMP hold, so a
#: window of up to a day (the longest window size) around one starts and ends within them.
EARLIEST_EVENT = datetime(1, 1, 2, tzinfo=UTC)
LATEST_EVENT = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)

_US = timedelta(microseconds=1)
_ZERO = Decimal(0)
_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // _US
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // _US
_EARLIEST_DELTA, _LATEST_DELTA = EARLIEST_EVENT - EPOCH, LATEST_EVENT - EPOCH
_EARLIEST_MICROS, _LATEST_MICROS = _EARLIEST_DELTA // _US, _LATEST_DELTA // _US


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
    """RFC 3339 text with an explicit offset, converted to UTC; digits beyond the microsecond
    are cut, never rounded up into the next window."""
    return from_micros(event_micros(value))


def event_micros(value: object) -> int:
    """The event time of :func:`parse_timestamp` as UTC microseconds since the epoch, the
    form a batched consumer keeps: the offset is applied by one exact subtraction, without
    building the UTC datetime."""
    if not isinstance(value, str):
        raise ContractError(Reason.INVALID_TYPE, f"timestamp must be a string, got {_kind(value)}")
    try:
        micros = (ciso8601.parse_rfc3339(value) - EPOCH) // _US
    except (ValueError, OverflowError):
        micros = None
    # outside datetime's own range: a valid local time whose UTC is before year 1 or after 9999
    if micros is None or not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ContractError(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {value[:64]!r} is not RFC 3339 with a UTC offset "
            "(e.g. 2026-11-27T10:00:00.250Z)",
        )
    if not _EARLIEST_MICROS <= micros <= _LATEST_MICROS:
        raise ContractError(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {value[:64]!r} is outside {EARLIEST_EVENT:%Y-%m-%d} – "
            f"{LATEST_EVENT:%Y-%m-%d}, where every window it falls in has a start and an end "
            "a warehouse can hold",
        )
    return micros


def parse_amount(value: object) -> Decimal:
    """A finite JSON number > 0, recovered exactly as written (up to 15 significant digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ContractError(Reason.INVALID_TYPE, f"amount must be a JSON number, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(Reason.INVALID_AMOUNT, f"amount must be finite, got {value}")
        # repr() is the shortest text that round-trips: for a literal of <= 15 significant
        # digits it is that literal, so no binary-float error enters the sums.
        return check_amount(Decimal(repr(value)))
    return check_amount(value if type(value) is Decimal else Decimal(value), value)


def check_amount(amount: Decimal, written: object = None) -> Decimal:
    """The contract's rules for an amount already read exactly as a Decimal."""
    # 1e400, read exactly, is a finite Decimal but no double holds it: not finite for JSON.
    adjusted = amount.adjusted() if amount.is_finite() else None
    if adjusted is None or (adjusted >= 308 and math.isinf(float(amount))):
        shown = amount if written is None else written
        raise ContractError(Reason.INVALID_AMOUNT, f"amount must be finite, got {shown}")
    if amount <= _ZERO:
        raise ContractError(Reason.INVALID_AMOUNT, f"amount must be > 0, got {amount}")
    # Decimal's own text gives the exponent as written without building a digit tuple (the
    # plain form has no "E"); digits and places are counted after dropping trailing zeros,
    # which only the exact reckoning below does — so it decides whenever these might count.
    text = str(amount)
    if "E" not in text:
        point = text.find(".")
        places = 0 if point < 0 else len(text) - point - 1
        if places <= MAX_AMOUNT_SCALE and adjusted + places < MAX_AMOUNT_DIGITS:
            return amount
    _, digits, exponent = amount.normalize().as_tuple()
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
    if adjusted >= MAX_AMOUNT_INTEGER_DIGITS:
        raise ContractError(
            Reason.INVALID_AMOUNT,
            f"amount {amount} is too large (it must be below 1e{MAX_AMOUNT_INTEGER_DIGITS})",
        )
    return amount


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float, Decimal)) else type(value).__name__
    )


class Message(msgspec.Struct, gc=False):
    """The message as a schema: what msgspec checks while it decodes (JSON syntax, UTF-8, field
    presence and types). ``amount`` is any JSON value, a number with a fraction or exponent
    read as a Decimal from its own digits (so it is exact), so that a quoted amount is told
    apart and refused; unknown fields are ignored. Nothing in a message can refer back to it,
    so the garbage collector need not track it (millions are decoded per replay)."""

    transaction_id: str
    amount: Any
    timestamp: str
    user_id: str | None = None
    merchant_id: str | None = None
    category: str | None = None
    country: str | None = None
    payment_method: str | None = None
    currency: str | None = None


_DECODER = msgspec.json.Decoder(Message, float_hook=Decimal)
#: The UTF-8 byte order mark some producers put before a file's (or a message's) text.
_BOM = b"\xef\xbb\xbf"


def parse_message(raw: bytes | str) -> Transaction:
    """Validate one message; raise :class:`ContractError` saying why it breaks the contract."""
    message, amount, micros = judge(raw)
    return Transaction(message.transaction_id, amount, from_micros(micros), message.user_id,
                       message.merchant_id, message.category, message.country,
                       message.payment_method, message.currency)


def judge(raw: bytes | str) -> tuple[Message, Decimal, int]:
    """The verdict of :func:`parse_message` without building its Transaction: the decoded
    message (its ``transaction_id`` and optional fields), the amount and the event time in
    UTC microseconds (:func:`event_micros`). A batched consumer reads the fields it needs from
    these."""
    # msgspec checks the UTF-8 of the fields it reads, not of those it skips; ASCII (most
    # messages) is UTF-8 by definition and needs no second look.
    if type(raw) is bytes and not raw.isascii():
        if raw.startswith(_BOM):  # RFC 8259 8.1: a parser may ignore one; Windows tools write it
            raw = raw[len(_BOM):]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(Reason.MALFORMED_JSON, f"payload is not UTF-8: {exc}") from None
    elif type(raw) is str and raw.startswith("\ufeff"):
        raw = raw[1:]
    try:
        message = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError
        raise _diagnose(raw, exc) from None
    plain = _at_once(message)
    if plain is not None:
        return message, plain[0], plain[2] // _US
    number = message.amount
    if number is None:
        raise ContractError(Reason.MISSING_FIELD, "required field 'amount' is missing")
    tx_id = message.transaction_id
    if not tx_id.strip():
        raise ContractError(Reason.INVALID_TYPE,
                            "transaction_id must be a non-empty string, got string")
    if len(tx_id) > MAX_TRANSACTION_ID_CHARS:
        raise ContractError(
            Reason.INVALID_TYPE,
            f"transaction_id is longer than {MAX_TRANSACTION_ID_CHARS} characters",
        )
    kind = type(number)
    if kind is int:  # an integer literal; one with a fraction or exponent is a Decimal already
        number = Decimal(number)
    elif kind is not Decimal:
        raise ContractError(Reason.INVALID_TYPE,
                            f"amount must be a JSON number, got {_kind(number)}")
    return message, check_amount(number), event_micros(message.timestamp)


class Verdicts(NamedTuple):
    """:func:`judge_all`'s verdicts on a list of messages: the accepted ones' ids, amounts (the
    exact text of their Decimal), event times (UTC micros, an int64 array) and values of the
    optional field asked for (``""`` for none), in input order; the refused ones with what
    judging them raised."""

    ids: list[str]
    amounts: list[str]
    micros: Any
    values: list[str] | None
    refused: list[tuple[bytes | str, Exception]]


def judge_all(raws: list, field: str | None = None) -> Verdicts:
    """:func:`judge` of every message in ``raws``, for less than its cost per message.

    Each message takes the contract's common case (:func:`_at_once`, which :func:`judge` takes
    first too) in one loop, keeping only the fields asked for (holding each decoded message
    until the list is done cost more than judging it); its event time is left as the
    ``timedelta`` since the epoch, turned into microseconds for the whole list in C (pyarrow
    reads a timedelta's fields directly; Python's ``// 1 µs`` costs as much as the parse).
    Whatever the common case does not take — not ASCII, not what the schema decodes, any rule
    that needs a closer look — is judged by :func:`judge` itself: the verdicts are its
    verdicts, message for message.
    """
    import pyarrow as pa  # with numpy, only for a batched consumer: publishers stay light

    decode, at_once = _DECODER.decode, _at_once
    ids, amounts, deltas, refused = [], [], [], []
    values = [] if field else None
    for raw in raws:
        plain = None
        if type(raw) is bytes and raw.isascii():
            try:
                message = decode(raw)
            except (msgspec.DecodeError, RecursionError):
                pass  # judge says why
            else:
                plain = at_once(message)
        if plain is None:
            verdict = _judged(raw)
            if type(verdict) is not tuple:
                refused.append((raw, verdict))
                continue
            message, number, micros = verdict
            text, delta = str(number), timedelta(microseconds=micros)
        else:
            _, text, delta = plain
        ids.append(message.transaction_id)
        amounts.append(text)
        deltas.append(delta)
        if field:
            values.append(getattr(message, field) or "")
    micros = pa.array(deltas, type=pa.duration("us")).to_numpy().view("int64")
    return Verdicts(ids, amounts, micros, values, refused)


def _at_once(message: Message) -> tuple[Decimal, str, timedelta] | None:
    """The contract's common case, accepted in one look: an amount written plainly (an integer,
    or a fraction with no exponent) within its places and digits, an id within its length, an
    event time within the contract's years — the amount, its text and the event time since
    the epoch. None when any rule needs :func:`judge`'s closer look, which names the reason or
    accepts what this look leaves (an exponent, say)."""
    number = message.amount
    kind = type(number)
    if kind is int:  # an integer literal; one with a fraction or exponent is a Decimal already
        number = Decimal(number)
    elif kind is not Decimal:
        return None
    text = str(number)  # plain form (no "E"): the digits and places as the text shows them
    point = text.find(".")
    places = 0 if point < 0 else len(text) - point - 1
    tx_id = message.transaction_id
    if not (number > _ZERO and places <= MAX_AMOUNT_SCALE and "E" not in text
            and number.is_finite() and number.adjusted() + places < MAX_AMOUNT_DIGITS
            and len(tx_id) <= MAX_TRANSACTION_ID_CHARS and tx_id.strip()):
        return None
    try:
        delta = ciso8601.parse_rfc3339(message.timestamp) - EPOCH
    except (ValueError, OverflowError):
        return None
    return (number, text, delta) if _EARLIEST_DELTA <= delta <= _LATEST_DELTA else None


def _judged(raw: bytes | str) -> tuple[Message, Decimal, int] | Exception:
    """What :func:`judge` returns, or the exception it raised, bare: held with its traceback
    and context, each refused message kept the frames of the judging alive for the garbage
    collector to walk again and again (ten times the cost of judging it)."""
    try:
        return judge(raw)
    except Exception as exc:
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        return exc


def _diagnose(raw: bytes | str, error: Exception) -> ContractError:
    """Why the schema refused ``raw``, in the contract's reasons and words.

    The message is read again with the standard library (which keeps every digit and also
    reads NaN, so the reason can be precise) and checked field by field in the contract's
    order. Whatever it finds, the verdict stays the schema's: a message this second look
    would accept (NaN in an unknown field, say) is malformed JSON for the schema.
    """
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ContractError(Reason.MALFORMED_JSON, f"payload is not UTF-8: {exc}")
    try:
        obj = json.loads(raw, parse_int=Decimal, parse_float=Decimal, parse_constant=float)
    except (ValueError, RecursionError) as exc:
        return ContractError(Reason.MALFORMED_JSON, f"not valid JSON: {exc}")
    try:
        _check_fields(obj)
    except ContractError as exc:
        return exc
    return ContractError(Reason.MALFORMED_JSON, f"not valid JSON: {error}")


def _check_fields(obj: object) -> None:
    """The contract, field by field, on a decoded object (for :func:`_diagnose`)."""
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
    parse_amount(obj["amount"])
    parse_timestamp(obj["timestamp"])
    for name in OPTIONAL_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ContractError(
                Reason.INVALID_TYPE, f"{name} must be a string or null, got {_kind(value)}"
            )
    # Text that JSON can carry but no sink can store: a lone surrogate (\ud800).
    try:
        json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ContractError(Reason.MALFORMED_JSON, f"not valid JSON: {exc}") from None


def decode_payload(raw: bytes | str) -> str:
    """The raw payload as text for a dead letter: undecodable bytes shown escaped, truncated."""
    if isinstance(raw, bytes):
        text = raw[: MAX_PAYLOAD_CHARS * 4].decode("utf-8", errors="backslashreplace")
    else:
        text = raw
    return text[:MAX_PAYLOAD_CHARS]


def validate(raw: bytes | str) -> Transaction | Invalid:
    """Like :func:`parse_message`, but returns the verdict instead of raising."""
    try:
        return parse_message(raw)
    except ContractError as exc:
        return Invalid(exc.reason, str(exc))


def format_timestamp(moment: datetime, timespec: str = "milliseconds") -> str:
    """RFC 3339 in UTC with millisecond precision (or ``timespec``) and a ``Z``: the form
    publishers send."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec=timespec)[:-6] + "Z"  # UTC's isoformat ends in +00:00


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exact (no float on the way)."""
    return (moment - EPOCH) // _US


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

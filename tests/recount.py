"""Independent expectations for the pipeline tests: messages spelled from known ground truth,
a catalogue of bad records labelled with the reason they must be dead-lettered under, and a
pandas / Decimal recount of the windows.

Nothing here calls txpipe's parser: every expected value comes from the ground truth the
message was written from, so a parser bug cannot hide by being recounted the same way.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal

import pandas as pd
from hypothesis import strategies as st

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
PAYLOAD_LIMIT = 64 * 1024

#: Amounts that binary floats cannot hold exactly, and the extremes the contract allows.
AWKWARD_AMOUNTS = ("0.10", "0.20", "0.30", "999999.99", "0.01", "19.99", "0.000000001",
                   "999999999999999", "123456.789", "1", "33.33")


@dataclass(frozen=True)
class Tx:
    """Ground truth of one valid transaction."""

    transaction_id: str
    amount: Decimal
    event_time: datetime  # aware, UTC, microsecond precision


# --- spelling valid messages -------------------------------------------------------------

def spell_timestamp(moment: datetime, rng: random.Random, extra_digits: str | None = None) -> str:
    """The same instant in one of RFC 3339's many spellings (offsets, t/z case, 1-9 digits).

    ``extra_digits`` (0-3 digits) are appended beyond the microseconds: the contract keeps
    microseconds, so they must not move the event (truncation, not rounding).
    """
    offset_minutes = rng.choice([0, 0, 120, -330, 345, -720, 840, 59, -1439, 1439])
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    micros = local.microsecond
    if extra_digits is None:
        extra_digits = rng.choice(["", "", "0", "00", "000", "999", "5"])
    frac6 = f"{micros:06d}"
    if extra_digits:
        frac = frac6 + extra_digits
    else:  # any exact spelling: shortest, padded, or none at all when zero
        shortest = frac6.rstrip("0")
        frac = frac6[: rng.randint(len(shortest), 6)]
    sep = rng.choice("TTTt ")
    text = local.strftime("%Y-%m-%d") + sep + local.strftime("%H:%M:%S")
    if frac:
        text += "." + frac
    if offset_minutes == 0:
        text += rng.choice(["Z", "Z", "z", "+00:00", "-00:00"])
    else:
        sign = "+" if offset_minutes > 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    return text


def spell_amount(amount: Decimal, rng: random.Random) -> str:
    """The same number as a JSON literal: plain, padded with zeros, or with an exponent."""
    plain = format(amount, "f")
    sign, digits, exponent = amount.as_tuple()
    choice = rng.randrange(4)
    if choice == 1 and "." in plain and len(digits) < 14:
        return plain + "0" * rng.randint(1, 2)
    if choice == 2:
        mantissa = "".join(map(str, digits))
        return f"{mantissa}{rng.choice('eE')}{exponent}" if exponent else mantissa
    if choice == 3 and exponent == 0 and len(digits) < 14:
        return plain + ".0"
    return plain


def spell_message(tx: Tx, rng: random.Random, extra_digits: str | None = None) -> bytes:
    """A valid message for ``tx`` with shuffled keys, optional and unknown fields."""
    fields = [
        ('"transaction_id"', json.dumps(tx.transaction_id)),
        ('"amount"', spell_amount(tx.amount, rng)),
        ('"timestamp"', json.dumps(spell_timestamp(tx.event_time, rng, extra_digits))),
    ]
    if rng.random() < 0.5:
        fields.append(('"category"', json.dumps(rng.choice(["food", "travel", "ünïcode"]))))
    if rng.random() < 0.2:
        fields.append(('"currency"', "null"))
    if rng.random() < 0.2:
        fields.append(('"unknown_field"', '{"nested": [1, 2.5, null]}'))
    rng.shuffle(fields)
    space = rng.choice(["", " "])
    return ("{" + f",{space}".join(f"{k}:{space}{v}" for k, v in fields) + "}").encode()


# --- bad records ---------------------------------------------------------------------------

def _obj(tid='"bad"', amount="1.00", ts='"2026-11-27T10:00:00Z"', **extra: str) -> bytes:
    """A JSON object from raw JSON fragments; a fragment of None leaves the field out."""
    fields = {"transaction_id": tid, "amount": amount, "timestamp": ts, **extra}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items() if v is not None)
            + "}").encode()


def bad_records(big: bool = False) -> list[tuple[bytes, str]]:
    """One or more records of every dead-letter reason, each labelled with that reason.

    No record contains a newline, so each is one line of a replay file. ``big`` adds a 2 MB
    line and a 200 000-deep nesting.
    """
    records = [
        # malformed_json
        (b'{"transaction_id": "m1", "amount": 1', "malformed_json"),
        # not UTF-8 in a field nobody reads is still not UTF-8
        (b'{"transaction_id": "m2", "amount": 1, "timestamp": "2026-11-27T10:00:00Z", '
         b'"note": "caf\xe9"}', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (b"\xff\xfe\x00garbage", "malformed_json"),  # not UTF-8
        (b'{"transaction_id": "\xc3\x28", "amount": 1, "timestamp": "2026-11-27T10:00:00Z"}',
         "malformed_json"),  # invalid UTF-8 inside a string
        (b'{"transaction_id": "\\ud800", "amount": 1, "timestamp": "2026-11-27T10:00:00Z"}',
         "malformed_json"),  # a lone surrogate: not text any sink could store
        (b"", "malformed_json"),
        (b"{'transaction_id': 'single quotes', 'amount': 1}", "malformed_json"),
        (b'{"transaction_id": "t", "amount": 1, "timestamp": "2026-11-27T10:00:00Z",}',
         "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, "malformed_json"),  # nested junk deeper than any parser
        # not_an_object
        (b"[]", "not_an_object"),
        (b"null", "not_an_object"),
        (b"42", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"true", "not_an_object"),
        (b'[{"transaction_id": "in-array", "amount": 1, "timestamp": "2026-11-27T10:00:00Z"}]',
         "not_an_object"),
        (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "not_an_object"),
        # missing_field
        (_obj(tid=None), "missing_field"),
        (_obj(tid="null"), "missing_field"),
        (_obj(amount=None), "missing_field"),
        (_obj(ts=None), "missing_field"),
        (_obj(amount="null"), "missing_field"),
        (b"{}", "missing_field"),
        # invalid_type
        (_obj(amount="true"), "invalid_type"),
        (_obj(amount="false"), "invalid_type"),
        (_obj(amount='"10.00"'), "invalid_type"),
        (_obj(amount="[1]"), "invalid_type"),
        (_obj(amount='{"value": 1}'), "invalid_type"),
        (_obj(tid="12345"), "invalid_type"),
        (_obj(tid='""'), "invalid_type"),
        (_obj(tid='"   "'), "invalid_type"),
        (_obj(tid=json.dumps("x" * 257)), "invalid_type"),
        (_obj(tid='["a"]'), "invalid_type"),
        (_obj(ts="1764237600"), "invalid_type"),
        (_obj(category="7"), "invalid_type"),
        (_obj(user_id='{"id": 1}'), "invalid_type"),
        # invalid_amount
        (_obj(amount="0"), "invalid_amount"),
        (_obj(amount="0.00"), "invalid_amount"),
        (_obj(amount="-5.25"), "invalid_amount"),
        (_obj(amount="-0.0"), "invalid_amount"),
        (_obj(amount="NaN"), "invalid_amount"),
        (_obj(amount="Infinity"), "invalid_amount"),
        (_obj(amount="-Infinity"), "invalid_amount"),
        (_obj(amount="1e400"), "invalid_amount"),
        # finite and of one digit, but beyond what a window's sum may hold (it crashed the
        # aggregation once)
        (_obj(amount="1e308"), "invalid_amount"),
        (_obj(amount="1e15"), "invalid_amount"),
        (_obj(amount="123456789012345e5"), "invalid_amount"),
        (_obj(amount="1e-10"), "invalid_amount"),
        (_obj(amount="1234567890123456"), "invalid_amount"),
        (_obj(amount="0.10000000000000001"), "invalid_amount"),
        (_obj(amount="99999999999999999999999"), "invalid_amount"),
        # invalid_timestamp
        (_obj(ts='"2026-11-27T10:00:00"'), "invalid_timestamp"),  # no offset
        # windows of up to a day around these would start or end outside years 1-9999
        (_obj(ts='"9999-12-31T23:59:59.999999Z"'), "invalid_timestamp"),
        (_obj(ts='"0001-01-01T00:00:00Z"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00.250"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27"'), "invalid_timestamp"),  # date only
        (_obj(ts='"2026-11-27T10:00:00+0530"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00+05"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00+24:00"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00+05:60"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00 UTC"'), "invalid_timestamp"),
        (_obj(ts='"2026-02-30T10:00:00Z"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:60Z"'), "invalid_timestamp"),
        (_obj(ts='"2026-11-27T10:00:00.Z"'), "invalid_timestamp"),
        (_obj(ts='"0001-01-01T00:00:00+01:00"'), "invalid_timestamp"),  # before year 1 in UTC
        (_obj(ts='"9999-12-31T23:59:59-01:00"'), "invalid_timestamp"),  # after 9999 in UTC
        (_obj(ts='"yesterday"'), "invalid_timestamp"),
        (_obj(ts='"\uff12\uff10\uff12\uff16-11-27T10:00:00Z"'), "invalid_timestamp"),  # ２０２６
        (_obj(ts='""'), "invalid_timestamp"),
    ]
    if big:
        junk = b'{"transaction_id": "huge", "padding": "' + b"x" * (2 * 1024 * 1024) + b'"'
        records.append((junk, "malformed_json"))  # a 2 MB line, cut off before its end
        records.append((b'{"a":' * 200_000 + b"1" + b"}" * 200_000, "malformed_json"))
    return records


def expected_payload(raw: bytes) -> str:
    """What a dead letter must keep of the raw bytes: the text (bad bytes escaped), 64 KiB."""
    return raw.decode("utf-8", errors="backslashreplace")[:PAYLOAD_LIMIT]


# --- the recount ---------------------------------------------------------------------------

_MONEY = Context(prec=60, rounding=ROUND_HALF_EVEN)


def expected_average(total: Decimal, count: int) -> Decimal:
    return _MONEY.divide(total, Decimal(count)).quantize(Decimal("1e-9"), context=_MONEY)


def unique_transactions(deliveries: list[Tx]) -> list[Tx]:
    """The first delivery of each transaction_id (re-sends carry the same truth anyway)."""
    first: dict[str, Tx] = {}
    for tx in deliveries:
        first.setdefault(tx.transaction_id, tx)
    return list(first.values())


def window_assignments(transactions: list[Tx], kind: str, size_seconds: int,
                       period_seconds: int | None = None, gap_seconds: int = 60) -> pd.DataFrame:
    """(window_start_time, window_end_time, amount) for every window each transaction is in.

    fixed: [k*size, (k+1)*size); sliding: every [k*period, k*period + size) holding the event;
    session: the events sorted, a new session whenever one starts at or after the current
    session's end (event + gap), as half-open intervals that merely touch do not overlap.
    """
    second = 1_000_000
    rows = []
    if kind == "session":
        current: list = []
        end = None
        for tx in sorted(transactions, key=lambda t: t.event_time):
            t = tx.event_time
            if current and t >= end:
                rows += [(current[0].event_time, end, c.amount) for c in current]
                current = []
            current.append(tx)
            end = t + timedelta(seconds=gap_seconds)  # sorted: the latest event ends it
        rows += [(current[0].event_time, end, c.amount) for c in current]
    else:
        size = size_seconds * second
        period = (period_seconds if kind == "sliding" else size_seconds) * second
        for tx in transactions:
            micros = (tx.event_time - EPOCH) // timedelta(microseconds=1)
            start = micros - micros % period
            while start > micros - size:
                rows.append((EPOCH + timedelta(microseconds=start),
                             EPOCH + timedelta(microseconds=start + size), tx.amount))
                start -= period
    return pd.DataFrame(rows, columns=["window_start_time", "window_end_time", "amount"])


def recount_windows(transactions: list[Tx], kind: str = "fixed", size_seconds: int = 30,
                    period_seconds: int | None = None, gap_seconds: int = 60) -> pd.DataFrame:
    """Per event-time window: count, exact sum, min, max and avg of the amounts.

    Indexed by window_start_time (UTC); columns hold window_end_time, ints and Decimals.
    """
    columns = ["window_end_time", "total_transactions", "total_amount_sum", "min_amount",
               "max_amount", "avg_transaction_amount"]
    frame = window_assignments(transactions, kind, size_seconds, period_seconds, gap_seconds)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    for column in ("window_start_time", "window_end_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    grouped = frame.groupby(["window_start_time", "window_end_time"])["amount"]
    out = pd.DataFrame({
        "total_transactions": grouped.size(),
        "total_amount_sum": grouped.agg(lambda s: sum(s, Decimal(0))),
        "min_amount": grouped.agg(lambda s: min(s)),
        "max_amount": grouped.agg(lambda s: max(s)),
    }).reset_index(level="window_end_time")
    out["avg_transaction_amount"] = [
        expected_average(total, count)
        for total, count in zip(out["total_amount_sum"], out["total_transactions"], strict=True)
    ]
    return out[columns]


def recount_fixed_windows(transactions: list[Tx], size_seconds: int) -> pd.DataFrame:
    """Per fixed event-time window, aligned to the epoch (see :func:`recount_windows`)."""
    return recount_windows(transactions, "fixed", size_seconds)


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Output rows (JSON form or Python form) as a frame shaped like the recount."""
    frame = pd.DataFrame(rows)
    for column in ("window_start_time", "window_end_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    for column in ("total_amount_sum", "min_amount", "max_amount", "avg_transaction_amount"):
        frame[column] = [Decimal(str(v)) for v in frame[column]]
    frame["total_transactions"] = frame["total_transactions"].astype(int)
    return frame.set_index("window_start_time").sort_index()


def assert_windows_match(rows: list[dict], transactions: list[Tx], size_seconds: int = 30,
                         kind: str = "fixed", period_seconds: int | None = None,
                         gap_seconds: int = 60) -> None:
    """Every window row equals the recount, exactly: bounds, counts, money to the last digit;
    and a batch replay emits each window once, on time."""
    expected = recount_windows(transactions, kind, size_seconds, period_seconds,
                               gap_seconds).sort_index()
    if not rows:
        assert expected.empty
        return
    actual = rows_frame(rows)
    assert actual.index.is_unique, "more than one row for a window in a batch replay"
    assert list(actual.index) == list(expected.index)
    for column in expected.columns:
        assert list(actual[column]) == list(expected[column]), column
    assert set(actual["pane_timing"]) == {"ON_TIME"}
    assert set(actual["pane_index"]) == {0}


def reasons(records: list[tuple[bytes, str]]) -> Counter:
    return Counter(reason for _, reason in records)


def at(seconds: float) -> datetime:
    """BASE + seconds, exact to the microsecond."""
    return BASE + timedelta(microseconds=round(seconds * 1_000_000))


#: JSON numbers as producers spell them: integers past any limit, floats' shortest text,
#: exponents either case, fractions of any length (each test adds its own odd values).
NUMBER_SPELLINGS = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(lambda digits, exponent, e: f"{digits}{e}{exponent}",
              st.integers(-10**18, 10**18), st.integers(-400, 400), st.sampled_from("eE")),
    st.builds(lambda whole, frac: f"{whole}.{frac}", st.integers(-10**9, 10**16),
              st.text("0123456789", min_size=1, max_size=20)),
)

"""Replay files written by a producer that is not the simulator: what a new user brings.

A plain Python producer that knows nothing of txpipe's own encoder: ``json.dumps`` with its
default spacing and field order shuffled per message, ``datetime.isoformat()`` timestamps
(microseconds, ``+00:00``, some other offsets), amounts as floats, integers or exponents,
optional fields present, null or absent, unknown fields, events spread unsorted over a day.
Optionally re-sends (some byte for byte, some re-serialised in another field order) and bad
lines of every kind. Seeded: the same arguments give the same bytes.

    python -m benchmarks.foreign OUTPUT --lines 1000000 [--duplicates 0.05] [--bad 0.01]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

START = datetime(2026, 11, 27, tzinfo=UTC)
OFFSETS = [UTC] * 6 + [timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)),
                                 timezone(timedelta(hours=5, minutes=30))]
CATEGORIES = ["grocery", "fuel", "travel", "electronics", "restaurants", "pharmacy"]
COUNTRIES = ["ES", "DE", "FR", "US", "GB", "IT", "MX"]


def _amount(rng: random.Random) -> str:
    """The JSON text of a valid amount, in one of the spellings producers use."""
    cents = int(rng.lognormvariate(7.5, 1.1)) + 1
    style = rng.random()
    if style < 0.70:
        return json.dumps(cents / 100)  # float repr: 12.5, 0.1, 1234.56
    if style < 0.85:
        return str(max(1, cents // 100))  # an integer
    if style < 0.95:
        return f"{cents / 100:.2f}"  # trailing zeros kept: 12.50
    return f"{cents}e-2"  # exponent notation


def _message(rng: random.Random, index: int, hours: float) -> tuple[str, dict]:
    tx_id = f"{rng.getrandbits(64):016x}-{index}"
    moment = START + timedelta(seconds=rng.uniform(0, hours * 3600))
    body = {
        "transaction_id": tx_id,
        "amount": "__AMOUNT__",
        "timestamp": moment.astimezone(rng.choice(OFFSETS)).isoformat(),
    }
    for name, values in (("merchant_id", None), ("category", CATEGORIES),
                         ("country", COUNTRIES), ("user_id", None)):
        roll = rng.random()
        if roll < 0.1:
            continue  # absent
        if roll < 0.15:
            body[name] = None
        else:
            body[name] = rng.choice(values) if values else f"{name[0]}{rng.randrange(5000)}"
    if rng.random() < 0.3:
        body["channel"] = {"kind": rng.choice(["web", "pos", "app"]), "retries": rng.randrange(3)}
    return tx_id, body


def _encode(rng: random.Random, body: dict, amount: str) -> bytes:
    keys = list(body)
    rng.shuffle(keys)
    text = json.dumps({k: body[k] for k in keys})  # default separators: ", " and ": "
    return text.replace('"__AMOUNT__"', amount, 1).encode()


BAD = [
    lambda r, b, a: _encode(r, b, a)[:-7],  # cut off
    lambda r, b, a: _encode(r, b, json.dumps(a)),  # amount as a string
    lambda r, b, a: _encode(r, {k: v for k, v in b.items() if k != "timestamp"}, a),
    lambda r, b, a: _encode(r, {**b, "timestamp": b["timestamp"][:19]}, a),  # no offset
    lambda r, b, a: _encode(r, b, "-" + a),  # negative
    lambda r, b, a: _encode(r, b, "0"),
    lambda r, b, a: b"[" + _encode(r, b, a) + b"]",  # not an object
    # Latin-1 bytes, not UTF-8 (json.dumps alone would escape the é)
    lambda r, b, a: _encode(r, {**b, "category": "caf\u00e9"}, a).replace(b"\\u00e9", b"\xe9"),
    lambda r, b, a: _encode(r, {**b, "transaction_id": 12345}, a),
    lambda r, b, a: _encode(r, b, "1.0000000000000001"),  # more digits than a double keeps
]


def lines(count: int, seed: int = 11, duplicates: float = 0.0, bad: float = 0.0,
          hours: float = 24.0) -> Iterator[bytes]:
    """``count`` lines: valid messages plus the requested shares of re-sends and bad lines."""
    rng = random.Random(seed)
    recent: list[tuple[dict, str, bytes]] = []
    for index in range(count):
        roll = rng.random()
        if roll < duplicates and recent:
            body, amount, sent = rng.choice(recent)
            yield sent if rng.random() < 0.5 else _encode(rng, body, amount)
            continue
        _, body = _message(rng, index, hours)
        amount = _amount(rng)
        if roll < duplicates + bad:
            yield BAD[index % len(BAD)](rng, body, amount)
            continue
        sent = _encode(rng, body, amount)
        recent.append((body, amount, sent))
        if len(recent) > 1000:
            recent.pop(rng.randrange(len(recent)))
        yield sent


def write(path: Path, count: int, seed: int = 11, duplicates: float = 0.0, bad: float = 0.0,
          hours: float = 24.0) -> Path:
    """Write the file once; reused when it is already there with the same arguments."""
    path = Path(path)
    marker = path.with_suffix(path.suffix + ".done")
    key = f"foreign-v2 {count} {seed} {duplicates} {bad} {hours}"
    if path.exists() and marker.exists() and marker.read_text() == key:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for line in lines(count, seed, duplicates, bad, hours):
            out.write(line + b"\n")
    marker.write_text(key)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.foreign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--duplicates", type=float, default=0.0)
    parser.add_argument("--bad", type=float, default=0.0)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args(argv)
    write(args.output, args.lines, args.seed, args.duplicates, args.bad, args.hours)
    return 0


if __name__ == "__main__":
    sys.exit(main())

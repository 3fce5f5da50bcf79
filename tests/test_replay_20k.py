"""The issue's "done when" replay: 20 000 transactions in one file, full of re-sends, odd
timestamp spellings, window-boundary events, float-unfriendly amounts and every kind of bad
record, replayed by the CLI. The windows must equal an independent recount (counts exact,
money to the cent and beyond) and every bad record must be dead-lettered under its reason."""

from __future__ import annotations

import glob
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from recount import (
    AWKWARD_AMOUNTS,
    BASE,
    Tx,
    assert_windows_match,
    bad_records,
    expected_payload,
    spell_message,
    unique_transactions,
)

from txpipe.config import Settings

pytestmark = pytest.mark.subprocess  # commands run as a user runs them

N = 20_000
WINDOW = 30  # the default WINDOW_SIZE_SECONDS: the run passes no window flag
VARIABLES = {name.upper() for name in Settings.model_fields}


def _generate(rng: random.Random):
    txs = []
    for i in range(N):
        kind = rng.random()
        if kind < 0.15:  # exactly on a window boundary: the first instant of a window
            micros = rng.randrange(-60, 180) * WINDOW * 1_000_000
        elif kind < 0.25:  # the last microsecond before a boundary
            micros = rng.randrange(-60, 180) * WINDOW * 1_000_000 - 1
        else:
            micros = rng.randrange(-1_800_000_000, 5_400_000_000)
        amount = (Decimal(rng.choice(("0.10", "0.20", "999999.99"))) if rng.random() < 0.6
                  else Decimal(rng.choice(AWKWARD_AMOUNTS)) if rng.random() < 0.5
                  else Decimal(rng.randrange(1, 10**9)).scaleb(-rng.randrange(0, 10)))
        txs.append(Tx(f"tx-{i:05d}-{rng.getrandbits(32):08x}", amount,
                      BASE + timedelta(microseconds=micros)))
    lines = []
    for tx in txs:
        # a last-microsecond event sometimes carries 7-9 digits that must not round it up
        extra = rng.choice(["9", "99", "999"]) if tx.event_time.microsecond == 999_999 else None
        lines.append(spell_message(tx, rng, extra))
    resends = []
    for _ in range(4_000):
        i = rng.randrange(N)
        # at-least-once delivery: the same bytes again, or the publisher re-serialising
        resends.append(lines[i] if rng.random() < 0.7 else spell_message(txs[i], rng))
    bad = bad_records(big=True) + [r for r in bad_records() for _ in range(9)]
    return txs, lines, resends, bad


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    work = tmp_path_factory.mktemp("replay20k")
    rng = random.Random(20_000)
    txs, lines, resends, bad = _generate(rng)
    everything = lines + resends + [raw for raw, _ in bad]
    rng.shuffle(everything)
    data = work / "transactions.jsonl"
    data.write_bytes(b"\n".join(everything) + b"\n")
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    done = subprocess.run(
        [sys.executable, "-m", "txpipe", "run", "--source", "file", "--input", str(data),
         "--sink", "jsonl", "--output", str(work / "out" / "windows"),
         "--dead-letter-output", str(work / "out" / "dead")],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    return {"work": work, "txs": txs, "lines": lines, "resends": resends, "bad": bad,
            "done": done}


def _rows(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def test_the_file_is_as_nasty_as_promised(replay):
    """Guard the generator: the replay really contains what the issue asks for."""
    text = b"\n".join(replay["lines"]).decode()
    stamps = re.findall(r'"timestamp": ?"([^"]+)"', text)
    assert len(stamps) == N
    assert sum(s.endswith("z") for s in stamps) > 500
    assert sum("t" in s[:11] for s in stamps) > 500
    assert sum(bool(re.search(r"[+-]\d\d:\d\d$", s)) for s in stamps) > 5_000
    assert {len(m) for s in stamps for m in re.findall(r"\.(\d+)", s)} == set(range(1, 10))
    on_boundary = sum(tx.event_time.timestamp() % WINDOW == 0 for tx in replay["txs"])
    assert on_boundary > 2_000
    assert sum(tx.amount in (Decimal("0.10"), Decimal("0.20"), Decimal("999999.99"))
               for tx in replay["txs"]) > 10_000
    assert len(unique_transactions(replay["txs"])) == N
    assert {reason for _, reason in replay["bad"]} == {
        "malformed_json", "not_an_object", "missing_field", "invalid_type", "invalid_amount",
        "invalid_timestamp"}


def test_the_replay_succeeds_and_its_counters_balance(replay):
    done = replay["done"]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    counts = {k: int(v) if v.isdigit() else v
              for k, v in (p.split("=") for p in done.stdout.split())}
    read = N + len(replay["resends"]) + len(replay["bad"])
    assert counts["read"] == read == counts["valid"] + counts["dead_lettered"]
    assert counts["valid"] == N + len(replay["resends"])
    assert (counts["unique"], counts["duplicates_dropped"]) == (N, len(replay["resends"]))
    assert counts["dead_lettered"] == len(replay["bad"])
    for reason, n in Counter(reason for _, reason in replay["bad"]).items():
        assert counts[reason] == n


def test_windows_equal_the_independent_recount(replay):
    rows = _rows(str(replay["work"] / "out" / "windows-*.jsonl"))
    assert_windows_match(rows, replay["txs"], WINDOW)
    total = sum((Decimal(r["total_amount_sum"]) for r in rows), Decimal(0))
    assert total == sum((tx.amount for tx in replay["txs"]), Decimal(0))
    assert sum(r["total_transactions"] for r in rows) == N


def test_every_bad_record_is_dead_lettered_under_its_reason(replay):
    rows = _rows(str(replay["work"] / "out" / "dead-*.jsonl"))
    assert Counter((r["reason"], r["payload"]) for r in rows) == Counter(
        (reason, expected_payload(raw)) for raw, reason in replay["bad"])
    assert max(len(r["payload"]) for r in rows) == 64 * 1024  # the 2 MB line, truncated

"""The replay's fast path gives what the element-wise path gives: the contract's fast parse
agrees with parse_message, the block reader yields ReadFromText's lines, and the chunked plan
of TransactionStats emits the same rows, dead letters, counters and transactions."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from recount import bad_records

from simulator import SimulationConfig, generate
from txpipe import batch, metrics
from txpipe.contract import ContractError, parse_fields, parse_message, to_micros
from txpipe.pipeline import TransactionStats
from txpipe.sources import MessagesSource, _ranges, _ReadRangeFn
from txpipe.windowing import WindowSpec

START = datetime(2026, 11, 27, 10, tzinfo=UTC)


def stream(n: int = 3_000) -> list[bytes]:
    cfg = SimulationConfig(seed=5, count=n, rate=50, start=START, duplicate_rate=0.05,
                           malformed_rate=0.05, late_rate=0.02, jitter_seconds=3)
    return [m.data for m in generate(cfg)] + [raw for raw, _ in bad_records(big=True)]


def verdict(fn, raw):
    try:
        return fn(raw)
    except ContractError as exc:
        return exc.reason, str(exc)


def test_parse_fields_agrees_with_parse_message():
    for raw in stream() + [m.decode("utf-8", "replace") for m in stream(300)]:
        tx = verdict(parse_message, raw)
        expected = tx if not hasattr(tx, "event_time") else (
            tx.transaction_id, tx.amount, to_micros(tx.event_time), tuple(tx[3:]))
        assert verdict(parse_fields, raw) == expected, raw


@pytest.mark.parametrize("compress", [False, True])
def test_the_block_reader_yields_the_lines_of_read_from_text(tmp_path, compress):
    rng = random.Random(3)
    for trial in range(100):
        lines = [bytes(rng.choice(b"ab{}\xff") for _ in range(rng.randrange(10)))
                 for _ in range(rng.randrange(12))]
        data = b"".join(line + rng.choice([b"\n", b"\r\n"]) for line in lines)
        if lines and rng.random() < 0.3:
            data = data.rstrip(b"\n").rstrip(b"\r")  # no newline after the last line
        expected = data.split(b"\n")  # ReadFromText: no line after a final newline
        if expected[-1] == b"":
            expected.pop()
        expected = [line[:-1] if line.endswith(b"\r") else line for line in expected]
        path = tmp_path / (f"{trial}.txt.gz" if compress else f"{trial}.txt")
        path.write_bytes(gzip.compress(data) if compress else data)
        for range_bytes in (1, 5, 1 << 20):
            got = [line for r in _ranges(str(path), range_bytes)
                   for line in _ReadRangeFn(rng.choice([1, 3, 64])).process(r)]
            assert got == expected, (data, range_bytes)


_OUT: dict[str, list] = {}


def _keep(element, key, timestamp=beam.DoFn.TimestampParam):
    _OUT.setdefault(key, []).append((element, timestamp))


def run_stats(messages: list[bytes], chunked: bool, monkeypatch) -> dict:
    monkeypatch.setattr(batch, "applies", lambda *a: chunked)
    _OUT.clear()
    p = beam.Pipeline()
    result = (p | "Read" >> MessagesSource(tuple(messages)).transform()
              | TransactionStats(WindowSpec(size_seconds=30)))
    result.windows | "KeepRows" >> beam.Map(_keep, "rows")
    result.dead_letters | "KeepDead" >> beam.Map(_keep, "dead")
    result.transactions | "KeepTx" >> beam.Map(_keep, "tx")
    run = p.run()
    run.wait_until_finish()
    rows = sorted((tuple((k, v) for k, v in row.items() if k != "processed_at"), ts)
                  for row, ts in _OUT["rows"])
    dead = sorted((d["reason"], d["payload"]) for d, _ in _OUT["dead"])
    txs = sorted((tx.transaction_id, tx.amount, tx.event_time, ts) for tx, ts in _OUT["tx"])
    return {"rows": rows, "dead": dead, "tx": txs, "counters": metrics.read_counters(run)}


def test_the_chunked_plan_equals_the_element_wise_plan(monkeypatch):
    messages = stream()
    chunked = run_stats(messages, True, monkeypatch)
    element_wise = run_stats(messages, False, monkeypatch)
    assert len(chunked["rows"]) > 5
    for key in ("rows", "dead", "tx", "counters"):
        assert chunked[key] == element_wise[key], key

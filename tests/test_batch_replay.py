"""The batched route as a replay runs it: a file of foreign spellings read in blocks of lines,
over many byte ranges and dedupe buckets, in fixed, sliding and session windows. Its windows
equal an independent Decimal recount of the ground truth to the last digit, every bad line is
dead-lettered under its reason, and its rows, dead letters and counters are the element-wise
route's on the same file."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import apache_beam as beam
import pytest
import recount
from collect import Outputs
from recount import Tx

from txpipe import batch, dedupe, metrics, sources
from txpipe.config import Route, WindowType
from txpipe.pipeline import TransactionStats
from txpipe.sources import FileSource, read_of
from txpipe.windowing import WindowSpec


def _replay_file(tmp_path, rng: random.Random, n: int = 3000):
    """Ground truth, and a file of it: foreign spellings, re-sends (byte for byte and
    re-spelled), every kind of bad line, unsorted over two hours, CRLF here and there, a byte
    order mark first."""
    txs = [Tx(f"tx-{i}", Decimal(rng.choice(recount.AWKWARD_AMOUNTS)) if rng.random() < 0.3
              else Decimal(rng.randrange(1, 10**8)).scaleb(-rng.randrange(0, 10)),
              recount.BASE + timedelta(microseconds=rng.randrange(-3600 * 10**6, 3600 * 10**6)))
           for i in range(n)]
    lines = [recount.spell_message(tx, rng) for tx in txs]
    resent = rng.sample(range(n), n // 10)
    lines += [lines[i] if rng.random() < 0.5 else recount.spell_message(txs[i], rng)
              for i in resent]
    bad = [record for record in recount.bad_records() if b"\n" not in record[0]
           and b"\r" not in record[0]] * 3
    lines += [raw for raw, _ in bad]
    rng.shuffle(lines)
    bad_lines = {raw for raw, _ in bad}
    lines.insert(0, lines.pop(next(i for i, line in enumerate(lines) if line not in bad_lines)))
    path = tmp_path / "foreign.jsonl"
    # as a Windows tool writes it: a byte order mark before the first line
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(
        line + rng.choice([b"\n", b"\n", b"\r\n"]) for line in lines))
    return path, txs, len(resent), bad, len(lines)


def _counters(result, prefix: str) -> Counter:
    from apache_beam.metrics.metric import MetricsFilter

    totals: Counter = Counter()
    for counter in result.metrics().query(
            MetricsFilter().with_namespace(metrics.NAMESPACE))["counters"]:
        if counter.key.step.startswith(prefix):
            totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return totals


def _rows(out: Outputs, key: str) -> list:
    return sorted(sorted((k, str(v.normalize()) if isinstance(v, Decimal) else str(v))
                         for k, v in row.items() if k != "processed_at") for row in out[key])


@pytest.mark.parametrize("spec", [
    WindowSpec(size_seconds=30),
    WindowSpec(kind=WindowType.SLIDING, size_seconds=60, period_seconds=30),
    WindowSpec(kind=WindowType.SESSION, gap_seconds=2),
], ids=["fixed", "sliding", "session"])
def test_a_foreign_file_replays_exactly_in_blocks(tmp_path, monkeypatch, spec):
    # many ranges, many blocks per range, lines across block ends, several dedupe buckets
    monkeypatch.setattr(sources, "RANGE_BYTES", 40_000)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 7_000)
    path, txs, resent, bad, lines = _replay_file(tmp_path, random.Random(21))
    source = FileSource(str(path))
    out = Outputs()
    with beam.Pipeline() as p:
        for route in Route:
            stats = (p | f"Read{route.name}" >> read_of(source, blocks=route is Route.BATCHED)
                     | route.value >> TransactionStats(spec, route=route, buckets=5))
            stats.windows | f"Windows{route.name}" >> out.keep(f"windows {route.value}")
            stats.dead_letters | f"Dead{route.name}" >> out.keep(f"dead {route.value}")
    result = p.result

    batched = Route.BATCHED.value
    recount.assert_windows_match(out[f"windows {batched}"], txs, spec.size_seconds,
                                 spec.kind.value, spec.period_seconds, spec.gap_seconds)
    assert Counter((d["reason"], d["payload"]) for d in out[f"dead {batched}"]) == Counter(
        (reason, recount.expected_payload(raw)) for raw, reason in bad)
    counters = _counters(result, f"{batched}/")
    assert counters[metrics.READ] == lines
    assert counters[metrics.UNIQUE] == len(txs)
    assert counters[metrics.VALID] == len(txs) + resent
    assert counters[metrics.DEAD_LETTERED] == len(bad)

    elementwise = Route.ELEMENTWISE.value
    assert _rows(out, f"windows {batched}") == _rows(out, f"windows {elementwise}")
    assert sorted(sorted((k, v) for k, v in d.items() if k != "seen_at")
                  for d in out[f"dead {batched}"]) == sorted(
        sorted((k, v) for k, v in d.items() if k != "seen_at") for d in out[f"dead {elementwise}"])
    assert counters == _counters(result, f"{elementwise}/")


def test_a_chunk_crosses_the_shuffle_intact():
    rng = random.Random(8)
    ids = [f"id-{rng.random()}\x00\n\u00e9" for _ in range(500)]
    amounts = [str(Decimal(rng.randrange(1, 10**15)).scaleb(-rng.randrange(10))) for _ in ids]
    micros = [rng.randrange(-2**62, 2**62) for _ in ids]
    for dims in (None, [rng.choice(["", "a", "ünï"]) for _ in ids]):
        chunk = batch.Chunk.decode(batch.Chunk(ids, amounts, micros, dims).encode())
        assert (chunk.ids, chunk.amounts, chunk.micros.tolist(), chunk.dims) == (
            ids, amounts, micros, dims)
        rows = [rng.randrange(len(ids)) for _ in range(300)]
        taken = batch.Chunk.joined([chunk.take(rows), chunk])
        assert (taken.ids, taken.amounts, taken.micros.tolist(), taken.dims) == (
            [ids[i] for i in rows] + ids, [amounts[i] for i in rows] + amounts,
            [micros[i] for i in rows] + micros,
            None if dims is None else [dims[i] for i in rows] + dims)


def test_a_blocks_buckets_are_the_dedupe_buckets():
    rng = random.Random(5)
    ids = ["", "x", *(f"tx-{rng.random()}-\u00e9\U0001f600" for _ in range(2000))]
    for buckets in (1, 7, 12, 1 << 16):
        assert batch.buckets_of(ids, buckets).tolist() == [dedupe.bucket_of(i, buckets)
                                                           for i in ids]


def test_a_buckets_first_deliveries_across_its_shuffled_values_and_pieces():
    """Copies of an id in other pieces of a value, and in other values: the first in arrival
    order is kept, with its own amount and time, and each id is counted once."""
    rng = random.Random(11)
    rows = [(f"id{rng.randrange(400)}", str(rng.randrange(1, 10**6)), rng.randrange(10**15))
            for _ in range(3000)]
    values, start = [], 0
    while start < len(rows):  # values of a few pieces each, pieces of a few rows each
        pieces = []
        for _ in range(rng.randrange(1, 4)):
            end = min(len(rows), start + rng.randrange(1, 300))
            ids, amounts, micros = zip(*rows[start:end], strict=True) if end > start else ((),) * 3
            pieces.append(batch.Chunk(list(ids), list(amounts), list(micros)).piece())
            start = end
        values.append(batch.packed(pieces))
    first: dict[str, tuple] = {}
    for row in rows:
        first.setdefault(row[0], row)
    fn = batch.FirstDeliveryFn()
    (chunk,) = fn.process((0, values))
    assert list(zip(chunk.ids, chunk.amounts, chunk.micros.tolist(), strict=True)) == list(
        first.values())
    assert list(fn.process((1, []))) == []

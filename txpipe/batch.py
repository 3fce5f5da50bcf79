"""TransactionStats for bounded input: the same stages and results, computed on chunks.

On Beam's Python runners every element costs microseconds of framework work in every step,
and the stateful dedupe a state round trip per element: a 1M-line replay took minutes. A
bounded input needs neither triggers nor state — every window fires once, ON_TIME, when the
input ends — so this plan handles messages a chunk at a time:

- Parse validates a chunk of messages in one call (the contract's fast path);
- Dedupe groups the valid transactions by a hash bucket of their id (every copy of an id lands
  in the same bucket, so the first delivery is found exactly) and drops redeliveries there;
- Window cuts fixed event-time windows arithmetically, as FixedWindows would;
- Aggregate sums each window's part of a chunk exactly (Decimal, 38 digits), then merges the
  parts per window, and emits the window rows in their windows.

It applies to fixed windows without early firings; streaming, sliding and session windows,
early panes and per-dimension breakdowns use the element-wise plan.
"""

from __future__ import annotations

import io
import pickle
import zlib
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal, localcontext
from typing import Any

import apache_beam as beam
from apache_beam.coders import Coder, registry
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import window
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from txpipe import metrics, money
from txpipe.aggregate import TransactionStatsFn, window_row
from txpipe.config import WindowType
from txpipe.contract import ContractError, Reason, Transaction, from_micros, parse_fields
from txpipe.parse import DEAD_LETTERS, dead_letter
from txpipe.windowing import WindowSpec, WindowTransactions

#: Hash buckets of transaction ids: enough to spread the dedupe over a few workers.
BUCKETS = 8
#: Valid transactions per chunk: big enough that per-chunk costs vanish, small enough to
#: keep a bundle's memory bounded.
CHUNK_SIZE = 20_000


class Chunk:
    """Valid transactions as columns: ids, Decimal amounts, event micros, optional fields."""

    __slots__ = ("ids", "amounts", "micros", "optional")

    def __init__(self, ids=None, amounts=None, micros=None, optional=None):
        self.ids: list[str] = [] if ids is None else ids
        self.amounts: list[Decimal] = [] if amounts is None else amounts
        self.micros: list[int] = [] if micros is None else micros
        self.optional: list[tuple] = [] if optional is None else optional

    def append(self, tx_id: str, amount: Decimal, micros: int, optional: tuple) -> None:
        self.ids.append(tx_id)
        self.amounts.append(amount)
        self.micros.append(micros)
        self.optional.append(optional)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> Iterator[tuple[str, Decimal, int, tuple]]:
        return zip(self.ids, self.amounts, self.micros, self.optional, strict=True)

    def transactions(self) -> Iterator[tuple[Transaction, int]]:
        for tx_id, amount, micros, optional in self.rows():
            yield Transaction(tx_id, amount, from_micros(micros), *optional), micros


class ChunkCoder(Coder):
    """One pickle per chunk: element-wise coding would cost more than the work itself.

    Amounts travel as text (pickling a Decimal costs five times more), and the pickler runs
    without its memo, which only slows down millions of small strings and tuples.
    """

    def encode(self, value: Chunk) -> bytes:
        out = io.BytesIO()
        pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
        pickler.fast = True
        pickler.dump((value.ids, list(map(str, value.amounts)), value.micros, value.optional))
        return out.getvalue()

    def decode(self, encoded: bytes) -> Chunk:
        ids, amounts, micros, optional = pickle.loads(encoded)
        return Chunk(ids, list(map(Decimal, amounts)), micros, optional)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Chunk


registry.register_coder(Chunk, ChunkCoder)


def applies(messages, spec: WindowSpec, breakdown: str | None) -> bool:
    """Whether ``messages`` can take the chunked plan with identical results."""
    options = messages.pipeline.options
    streaming = options is not None and options.view_as(StandardOptions).streaming
    return (messages.is_bounded and not streaming and spec.kind is WindowType.FIXED
            and not spec.early_firing_seconds and breakdown is None)


class ParseChunkFn(beam.DoFn):
    """Raw messages -> chunks of valid transactions per id bucket, and dead letters.

    Chunked by hand rather than with Beam's batched DoFns, which the DirectRunner's bundle
    executor (chosen whenever a pipeline has a processing-time timer) cannot run.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE):
        self._chunk_size = chunk_size
        self._counters = metrics.ParseCounters()

    def start_bundle(self):
        self._buckets = [Chunk() for _ in range(BUCKETS)]
        self._pending = 0
        self._read_n = 0
        self._dead_n: Counter = Counter()

    def process(self, raw) -> Iterator[Any]:
        self._read_n += 1
        if not isinstance(raw, (bytes, str)):
            raw = getattr(raw, "data", raw)  # a PubsubMessage with attributes
        try:
            tx_id, amount, micros, optional = parse_fields(raw)
        except ContractError as exc:
            self._dead_n[exc.reason] += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(exc.reason, str(exc), raw))
            return
        except Exception as exc:  # a bug here must not lose the message either
            self._dead_n[Reason.MALFORMED_JSON] += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                Reason.MALFORMED_JSON, f"unparseable: {type(exc).__name__}: {exc}", raw))
            return
        # crc32, not hash(): str hashes differ between worker processes
        self._buckets[zlib.crc32(tx_id.encode()) % BUCKETS].append(
            tx_id, amount, micros, optional)
        self._pending += 1
        if self._pending >= self._chunk_size:
            yield from self._flush()

    def _flush(self) -> Iterator[tuple[int, Chunk]]:
        buckets, self._buckets, self._pending = self._buckets, [Chunk() for _ in range(BUCKETS)], 0
        for bucket, chunk in enumerate(buckets):
            if chunk:
                yield bucket, chunk

    def finish_bundle(self):
        for chunk in self._flush():
            yield WindowedValue(chunk, MIN_TIMESTAMP, (GlobalWindow(),))
        dead, self._dead_n = self._dead_n, Counter()
        self._counters.flush(self._read_n - sum(dead.values()), dead)
        self._read_n = 0


class FirstDeliveryFn(beam.DoFn):
    """All chunks of one id bucket -> one chunk with the first delivery of each id."""

    def __init__(self):
        self._dropped = Metrics.counter(metrics.NAMESPACE, metrics.DUPLICATES_DROPPED)
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def process(self, element: tuple[int, Any]) -> Iterator[Chunk]:
        _, chunks = element
        seen: set[str] = set()
        out = Chunk()
        dropped = 0
        for chunk in chunks:
            for tx_id, amount, micros, optional in chunk.rows():
                if tx_id in seen:
                    dropped += 1
                    continue
                seen.add(tx_id)
                out.append(tx_id, amount, micros, optional)
        self._dropped.inc(dropped)
        self._unique.inc(len(out))
        if out:
            yield out


class CutWindowsFn(beam.DoFn):
    """A chunk -> (window start in micros, the chunk's transactions in that window)."""

    def __init__(self, size_seconds: int):
        self._size = size_seconds * 1_000_000

    def process(self, chunk: Chunk) -> Iterator[tuple[int, Chunk]]:
        size = self._size
        parts: dict[int, Chunk] = {}
        for tx_id, amount, micros, optional in chunk.rows():
            start = micros - micros % size  # FixedWindows(size), offset 0
            part = parts.get(start)
            if part is None:
                part = parts[start] = Chunk()
            part.append(tx_id, amount, micros, optional)
        yield from parts.items()


def partial_stats(element: tuple[int, Chunk]) -> tuple[int, list]:
    """(window start, chunk) -> (window start, the TransactionStatsFn accumulator of it)."""
    start, chunk = element
    amounts = chunk.amounts
    with localcontext(money.CONTEXT):  # sum() then adds in the 38-digit context
        total = sum(amounts, money.ZERO)
    return start, [len(amounts), total, min(amounts), max(amounts)]


class MergeStatsFn(TransactionStatsFn):
    """Per-window partial accumulators -> the window's stats."""

    def add_input(self, acc, partial):
        return self.merge_accumulators([acc, partial])


class WindowRowFn(beam.DoFn):
    """(window start, stats) -> the window's row, stamped inside its window."""

    def __init__(self, size_seconds: int):
        self._size = size_seconds * 1_000_000
        self._panes = Metrics.counter(metrics.NAMESPACE, metrics.PANES)

    def process(self, element: tuple[int, dict]) -> Iterator[TimestampedValue]:
        start, stats = element
        end = start + self._size
        self._panes.inc()
        row = window_row(from_micros(start), from_micros(end), stats, "ON_TIME", 0)
        yield TimestampedValue(row, Timestamp(micros=end - 1))


class StampFn(beam.DoFn):
    """A chunk -> its transactions, one element each, stamped with their event time."""

    def process(self, element: tuple[int, Chunk]) -> Iterator[TimestampedValue]:
        for tx, micros in element[1].transactions():
            yield TimestampedValue(tx, Timestamp(micros=micros))


class ChunkedStats:
    """Applies the chunked plan under the stage names of the element-wise one."""

    def __init__(self, spec: WindowSpec):
        self.spec = spec

    def expand(self, messages):
        size = self.spec.size_seconds
        parsed = messages | "Parse" >> beam.ParDo(ParseChunkFn()).with_output_types(
            KV[int, Chunk]).with_outputs(DEAD_LETTERS, main="valid")  # pickled per chunk
        unique = parsed.valid | "Dedupe" >> _Dedupe()
        self.windowed = unique | "Window" >> beam.ParDo(CutWindowsFn(size)).with_output_types(
            KV[int, Chunk])
        rows = self.windowed | "Aggregate" >> _Aggregate(size)
        return rows, parsed[DEAD_LETTERS]

    def transactions(self, label: str):
        """The windowed transactions, one element each (built only when asked for)."""
        return self.windowed | label >> _Transactions(self.spec)


class _Transactions(beam.PTransform):
    def __init__(self, spec: WindowSpec):
        super().__init__()
        self.spec = spec

    def expand(self, windowed):
        spec = self.spec
        return (windowed
                | "Stamp" >> beam.ParDo(StampFn())
                | "AssignWindows" >> WindowTransactions(spec))


class _Dedupe(beam.PTransform):
    def expand(self, bucketed):
        return (bucketed
                | "GroupByBucket" >> beam.GroupByKey()
                | "FirstDelivery" >> beam.ParDo(FirstDeliveryFn()).with_output_types(Chunk))


class _Aggregate(beam.PTransform):
    def __init__(self, size_seconds: int):
        super().__init__()
        self.size_seconds = size_seconds

    def expand(self, windowed):
        return (windowed
                | "PartialStats" >> beam.Map(partial_stats)
                | "Combine" >> beam.CombinePerKey(MergeStatsFn())
                | "FormatRows" >> beam.ParDo(WindowRowFn(self.size_seconds))
                | "IntoWindows" >> beam.WindowInto(window.FixedWindows(self.size_seconds)))

"""The batched route of TransactionStats, for bounded input: the same stages, a chunk at a time.

Beam's Python SDK spends microseconds of framework work per element and step, and the
element-wise Dedupe a state round trip per transaction. A bounded input needs neither: every
window fires once, ON_TIME, when the input ends. So this route moves transactions in chunks
through Beam's own batch mechanisms, and shares every stage's logic with the element-wise
route:

- **Parse** judges each block of messages at once with :func:`txpipe.contract.judge_all`,
  whose verdicts are the element-wise route's (:func:`txpipe.parse.checked`: the same
  transactions, the same dead letters); valid transactions leave as column chunks, keyed by a
  hash bucket of their id.
- **Dedupe** is a GroupByKey of the buckets: every copy of an id meets in its bucket, and the
  first delivery is kept. The number of buckets grows with the input (:func:`buckets_for`), so
  a Dataflow backfill spreads over workers instead of piling onto a fixed few.
- **Window** assigns windows with the spec's own Beam WindowFn (:class:`WindowAssigner`), and
  merges sessions with its own merge.
- **Aggregate** folds each chunk's part of a window into :class:`TransactionStatsFn`'s
  accumulator and merges the parts with CombinePerKey (lifted: one accumulator per window and
  bundle crosses the shuffle); rows are the element-wise route's (:func:`window_row`), each in
  its window, ON_TIME, pane 0.

It takes fixed, sliding and session windows, and a per-dimension breakdown of fixed and sliding
ones; :func:`declines` says which specs it leaves to the element-wise route, and why.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import apache_beam as beam
import msgspec
import numpy as np
import zstandard
from apache_beam.coders import Coder, registry
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.window import IntervalWindow
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from txpipe import metrics
from txpipe.aggregate import (
    AggregateByDimension,
    MergeAccumulatorsFn,
    PartialCoder,
    TransactionStatsFn,
    window_row,
)
from txpipe.contract import from_micros, judge_all
from txpipe.dedupe import first_deliveries
from txpipe.parse import DEAD_LETTERS, payload, rejected
from txpipe.windowing import WindowAssigner, WindowSpec, in_global_window

#: Valid transactions a Parse holds before it sends them on, over all its buckets' chunks:
#: big enough that per-chunk costs vanish, small enough to keep a bundle's memory bounded.
PARSE_HOLDS = 65_536
#: Input bytes per dedupe bucket: a bucket's transactions, decoded after the shuffle (about
#: 200 bytes each), stay near 20 MB whatever the input, and a big input gets many buckets,
#: hence many workers.
BUCKET_BYTES = 16 << 20
MAX_BUCKETS = 1 << 16
#: Buckets when the source cannot say how big it is.
DEFAULT_BUCKETS = 16


def buckets_for(estimated_bytes: int | None) -> int:
    """How many dedupe buckets an input of ``estimated_bytes`` gets (at least 1)."""
    if not estimated_bytes:
        return DEFAULT_BUCKETS
    return max(1, min(MAX_BUCKETS, math.ceil(estimated_bytes / BUCKET_BYTES)))


def declines(spec: WindowSpec, breakdown: str | None) -> str | None:
    """Why the batched route does not take ``spec`` (None: it does)."""
    if spec.early_firing_seconds:
        return "early panes are a streaming notion: a bounded input's windows fire once"
    if breakdown and spec.window_fn().is_merging():
        return "per-dimension sessions are merged per value, which only the element-wise route does"
    return None


class Chunk:
    """Valid transactions as columns: ids, amounts (exact decimal text, as Decimal reads and
    writes it), event micros (a list, or an int64 array once decoded), dimension values.

    Chunks cross the shuffle as :func:`packed` pieces — each piece one MessagePack array
    written and read by msgspec in C (:meth:`piece`), micros as 8-byte integers (read back as a
    numpy view, no Python int each), a value's pieces compressed together by zstd at its
    fastest level (to about half, for a fraction of a microsecond per transaction) — so a
    runner that holds the shuffle in memory, as the local ones do, holds compact bytes, not
    Python objects. Amounts stay text until Window has sorted them: Decimals made in that
    order are summed from contiguous memory.
    """

    __slots__ = ("ids", "amounts", "micros", "dims")

    def __init__(self, ids=None, amounts=None, micros=None, dims=None):
        self.ids: list[str] = [] if ids is None else ids
        self.amounts: list[str] = [] if amounts is None else amounts
        self.micros = [] if micros is None else micros
        self.dims: list[str] | None = dims

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self) -> list[list]:
        return [self.ids, self.amounts, self.micros, *([] if self.dims is None else [self.dims])]

    def take(self, rows: list[int]) -> Chunk:
        """The chunk of ``rows``, in that order."""
        return Chunk([self.ids[i] for i in rows], [self.amounts[i] for i in rows],
                     np.asarray(self.micros, dtype=np.int64)[rows],
                     None if self.dims is None else [self.dims[i] for i in rows])

    @classmethod
    def joined(cls, chunks: list[Chunk]) -> Chunk:
        """One chunk of ``chunks``' rows, in order."""
        if len(chunks) <= 1:
            return chunks[0] if chunks else cls()
        chain = itertools.chain.from_iterable
        dims = None if chunks[0].dims is None else list(chain(c.dims for c in chunks))
        return cls(list(chain(c.ids for c in chunks)), list(chain(c.amounts for c in chunks)),
                   np.concatenate([np.asarray(c.micros, dtype=np.int64) for c in chunks]), dims)

    def piece(self) -> bytes:
        """The columns as one MessagePack array, uncompressed (see :func:`packed`)."""
        micros = np.asarray(self.micros, dtype=np.int64).tobytes()
        return _ENCODER.encode((self.ids, self.amounts, micros, self.dims))

    @classmethod
    def from_piece(cls, piece: bytes) -> Chunk:
        ids, amounts, micros, dims = _PIECE.decode(piece)
        return cls(ids, amounts, np.frombuffer(micros, dtype=np.int64), dims)

    def encode(self) -> bytes:
        return packed([self.piece()])

    @classmethod
    def decode(cls, encoded: bytes) -> Chunk:
        """The one chunk of all the pieces ``encoded`` packs."""
        return cls.joined(cls.pieces(encoded))

    @classmethod
    def pieces(cls, encoded: bytes) -> list[Chunk]:
        """The pieces ``encoded`` packs, each a chunk."""
        return list(map(cls.from_piece, _PIECES.decode(
            zstandard.ZstdDecompressor().decompress(encoded))))


def packed(pieces: list[bytes]) -> bytes:
    """Pieces of chunks (:meth:`Chunk.piece`) as one shuffle value: Parse encodes each block's
    share of a bucket while its objects are fresh in memory (encoding them later, gathered from
    many blocks, cost twice as much), and compresses a bucket's pieces together."""
    return zstandard.ZstdCompressor(level=1).compress(_ENCODER.encode(pieces))


_ENCODER = msgspec.msgpack.Encoder()
_PIECE = msgspec.msgpack.Decoder(tuple[list[str], list[str], bytes, list[str] | None])
_PIECES = msgspec.msgpack.Decoder(list[bytes])


class ChunkCoder(Coder):
    """A chunk as one :meth:`Chunk.encode`: element-wise coding would cost more than the work
    itself."""

    def encode(self, value: Chunk) -> bytes:
        return value.encode()

    def decode(self, encoded: bytes) -> Chunk:
        return Chunk.decode(encoded)

    def estimate_size(self, value: Chunk) -> int:
        # Beam samples element sizes for its metrics; the default would encode the chunk again.
        return 48 * len(value)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Chunk


registry.register_coder(Chunk, ChunkCoder)


# --- Parse ----------------------------------------------------------------------------------


def buckets_of(ids: list[str], buckets: int):
    """:func:`txpipe.dedupe.bucket_of` of each id, as a numpy array: the same crc32 rule, run
    over a block in C instead of a Python call per id."""
    return np.fromiter(map(zlib.crc32, map(str.encode, ids)), np.int64, len(ids)) % buckets


#: The types of a message that is its own payload (txpipe.parse.payload).
_PAYLOADS = frozenset((bytes, str))


class ParseBatchFn(beam.DoFn):
    """Blocks of raw messages (lists, or single messages) -> (bucket, encoded Chunk) of valid
    transactions, and dead letters."""

    def __init__(self, buckets: int, breakdown: str | None = None,
                 holds: int = PARSE_HOLDS):
        if breakdown:
            AggregateByDimension(breakdown)  # refuses a field that is no dimension
        self._buckets, self._breakdown = buckets, breakdown
        self._chunk_size = max(1024, holds // buckets)
        self._counters = metrics.ParseCounters()

    def start_bundle(self):
        self._pieces: dict[int, list[bytes]] = {}
        self._held: Counter = Counter()  # transactions in each bucket's pieces
        self._valid = 0
        self._dead: Counter = Counter()

    def process(self, element) -> Iterator[Any]:
        raws = element if type(element) is list else [element]
        if not _PAYLOADS.issuperset(map(type, raws)):  # a source's messages (PubsubMessage)
            raws = list(map(payload, raws))
        ids, amounts, micros, dims, refused = judge_all(raws, self._breakdown)
        for raw, exc in refused:  # the contract's verdict, or a bug: a dead letter either way
            reason, dead = rejected(raw, exc)
            self._dead[reason] += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead)
        if ids:
            self._valid += len(ids)
            yield from self._hold(Chunk(ids, amounts, micros, dims))

    def _hold(self, block: Chunk) -> Iterator[tuple[int, bytes]]:
        """Adds a block's transactions to the pieces of their buckets; sends on a bucket's
        pieces once they hold a chunk's worth."""
        buckets = buckets_of(block.ids, self._buckets)
        order, starts = _runs([buckets])
        columns = [_ordered(column, order) for column in block.columns()]
        ends = [*starts[1:].tolist(), len(order)]
        pieces, held = self._pieces, self._held
        for first, end in zip(starts.tolist(), ends, strict=True):
            bucket = int(buckets[order[first]])
            pieces.setdefault(bucket, []).append(
                Chunk(*(column[first:end] for column in columns)).piece())
            held[bucket] += end - first
            if held[bucket] >= self._chunk_size:
                del held[bucket]
                yield bucket, packed(pieces.pop(bucket))

    def finish_bundle(self):
        pieces, self._pieces, self._held = self._pieces, {}, Counter()
        for bucket, bucket_pieces in pieces.items():
            yield in_global_window((bucket, packed(bucket_pieces)))
        dead, self._dead = self._dead, Counter()
        self._counters.flush(self._valid, dead)
        self._valid = 0


# --- Dedupe ---------------------------------------------------------------------------------


class FirstDeliveryFn(beam.DoFn):
    """All chunks of one bucket -> one chunk holding the first delivery of each id (a
    bucket's share of the input: what Window then cuts at once)."""

    def __init__(self):
        self._unique = Metrics.counter(metrics.NAMESPACE, metrics.UNIQUE)

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Chunk]:
        # the bucket's pieces joined once, and its first deliveries taken once: one pass over
        # its transactions, not a join and a take per shuffled value and a join of them all
        _, encoded = element
        chunk = Chunk.joined([piece for value in encoded for piece in Chunk.pieces(value)])
        keep = first_deliveries(chunk.ids)
        self._unique.inc(len(chunk) if keep is None else len(keep))
        if len(chunk):
            yield chunk if keep is None else chunk.take(keep)


# --- Window ---------------------------------------------------------------------------------


class CutWindowsFn(beam.DoFn):
    """A chunk of unique transactions -> ((start, end[, dimension value]), accumulator) of each
    window part the chunk holds.

    The chunk is sorted once by stretch of time (and dimension value) and each run of equal
    keys folded into one TransactionStatsFn accumulator, merged with the bundle's other chunks'
    accumulators of that stretch; when the bundle ends, each stretch's accumulator is merged
    into each window of the stretch (once per stretch and window, however many chunks the
    bundle had) and the window parts leave (Beam's own combiner lifting would merge them there,
    at a cost per part). Sessions cannot be assigned a
    transaction at a time: a chunk's transactions are merged into the sessions they make among
    themselves (as the Sessions WindowFn merges the windows ``[t, t + gap)`` that overlap), and
    the parts are merged across chunks in Aggregate.
    """

    def __init__(self, spec: WindowSpec, breakdown: str | None):
        self._spec, self._breakdown = spec, breakdown

    def setup(self):
        self._window_fn = self._spec.window_fn()
        self._merging = self._window_fn.is_merging()
        self._assign = None if self._merging else WindowAssigner(self._window_fn)
        self._stats = TransactionStatsFn()

    def start_bundle(self):
        self._parts: dict = {}  # stretch [, dimension value] -> accumulator

    def finish_bundle(self):
        stretches, self._parts = self._parts, {}
        assign, merge = self._assign, self._stats.merge_accumulators
        parts: dict[tuple, list] = {}
        for key, acc in stretches.items():
            stretch, value = (key, None) if self._breakdown is None else key
            for bounds in assign(stretch * assign.grain + assign.offset):
                part_key = bounds if value is None else (*bounds, value)
                part = parts.get(part_key)
                parts[part_key] = list(acc) if part is None else merge([part, acc])
        for key, acc in parts.items():
            yield in_global_window((key, acc))

    def process(self, chunk: Chunk) -> Iterator[tuple[tuple, list]]:
        if not len(chunk):
            return
        micros = np.asarray(chunk.micros, dtype=np.int64)
        if self._merging:
            yield from self._sessions(chunk, micros)
            return
        assign = self._assign
        columns = [(micros - assign.offset) // assign.grain]
        values = None
        if self._breakdown:
            codes: dict[str, int] = {}
            columns.append(np.array([codes.setdefault(d, len(codes)) for d in chunk.dims]))
            values = list(codes)
        order, starts = _runs(columns)
        amounts = list(map(Decimal, _ordered(chunk.amounts, order)))
        starts = starts.tolist()
        stretches = columns[0][order][starts].tolist()
        codes = None if values is None else columns[1][order][starts].tolist()
        accumulators = TransactionStatsFn.accumulate_runs(amounts, starts,
                                                          [*starts[1:], len(amounts)])
        parts, merge = self._parts, self._stats.merge_accumulators
        for run, acc in enumerate(accumulators):
            key = stretches[run] if codes is None else (stretches[run], values[codes[run]])
            part = parts.get(key)
            parts[key] = acc if part is None else merge([part, acc])

    def _sessions(self, chunk: Chunk, micros) -> Iterator[tuple[tuple, list]]:
        gap = self._window_fn.gap_size.micros
        order = np.argsort(micros, kind="stable")
        amounts = list(map(Decimal, _ordered(chunk.amounts, order)))
        t = micros[order]
        # sorted, [t, t + gap) overlaps the session so far unless t >= the previous t + gap
        starts = [0, *(np.flatnonzero(np.diff(t) >= gap) + 1).tolist()]
        ends = [*starts[1:], len(amounts)]
        bounds = zip(t[starts].tolist(), (t[[e - 1 for e in ends]] + gap).tolist(), strict=True)
        yield from zip(bounds, TransactionStatsFn.accumulate_runs(amounts, starts, ends),
                       strict=True)


def _ordered(values, order):
    """``values`` in ``order``: an array (the micros) as an array; a list by a comprehension,
    not an object array, as numpy probes each Decimal for the array protocol."""
    if isinstance(values, np.ndarray):
        return values[order]
    return [values[i] for i in order.tolist()]


def _runs(columns: list) -> tuple:
    """The stable order that sorts rows by ``columns`` (the first one first), and where each
    run of equal rows starts in that order."""
    order = np.lexsort(columns[::-1])
    change = np.zeros(len(order), dtype=bool)
    change[0] = True
    for column in columns:
        ordered = column[order]
        change[1:] |= ordered[1:] != ordered[:-1]
    return order, np.flatnonzero(change)


# --- Aggregate ------------------------------------------------------------------------------


class MergeSessionsFn(beam.CombineFn):
    """Session parts of every chunk -> the sessions they make together, each with its
    accumulator; overlapping parts are merged by the Sessions WindowFn itself."""

    def __init__(self, spec: WindowSpec):
        self._spec = spec
        self._stats = TransactionStatsFn()

    def create_accumulator(self) -> list:
        return []

    def add_input(self, sessions: list, part) -> list:
        sessions.append(part)
        return sessions

    def merge_accumulators(self, accumulators) -> list:
        parts = [p for acc in accumulators for p in acc]
        return self._merge(parts)

    def compact(self, sessions: list) -> list:
        return self._merge(sessions)

    def extract_output(self, sessions: list) -> list:
        return self._merge(sessions)

    def _merge(self, parts: list) -> list:
        windows: dict[IntervalWindow, list] = {}
        for (start, end), acc in parts:
            key = IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))
            windows[key] = (self._stats.merge_accumulators([windows[key], acc])
                            if key in windows else acc)
        merges: list[tuple[list, IntervalWindow]] = []

        class Context(window.WindowFn.MergeContext):
            def merge(self, to_be_merged, merge_result):
                merges.append((list(to_be_merged), merge_result))

        self._spec.window_fn().merge(Context(list(windows)))
        for to_be_merged, result in merges:
            acc = self._stats.merge_accumulators([windows.pop(w) for w in to_be_merged])
            windows[result] = acc
        return [((w.start.micros, w.end.micros), acc) for w, acc in windows.items()]


class MergePartsFn(MergeAccumulatorsFn):
    """Window parts -> the window's stats; the accumulators cross the lifted combine's
    shuffle as the element-wise route's do (:class:`~txpipe.aggregate.PartialCoder`), not as
    a pickle per Decimal (a sparse input has a part, hence an accumulator, per
    transaction)."""

    def get_accumulator_coder(self):
        return PartialCoder()


class WindowRowFn(beam.DoFn):
    """((start, end[, dimension value]), stats) -> the window's row, in its window."""

    def __init__(self, breakdown: str | None):
        self._breakdown = breakdown
        self._panes = Metrics.counter(metrics.NAMESPACE, metrics.PANES)

    def process(self, element: tuple[tuple, dict]) -> Iterator[WindowedValue]:
        key, stats = element
        start, end = key[0], key[1]
        extra = {"dimension_value": key[2]} if self._breakdown else None
        self._panes.inc()
        row = window_row(from_micros(start), from_micros(end), stats, "ON_TIME", 0, extra)
        if self._breakdown:
            row["dimension"] = self._breakdown
        win = IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))
        yield WindowedValue(row, win.max_timestamp(), (win,))


# --- the route ------------------------------------------------------------------------------


class BatchedStats:
    """Applies the batched route under the stage names of the element-wise one."""

    def __init__(self, spec: WindowSpec, buckets: int = DEFAULT_BUCKETS,
                 breakdown: str | None = None, breakdown_label: str = "AggregateByDimension"):
        reason = declines(spec, breakdown)
        if reason:
            raise ValueError(f"the batched route does not take this window spec: {reason}")
        self.spec, self.buckets, self.breakdown = spec, buckets, breakdown
        self.breakdown_label = breakdown_label

    def expand(self, messages):
        parse = ParseBatchFn(self.buckets, self.breakdown)
        # KV[int, bytes]: chunks cross the shuffle encoded (Chunk.encode)
        parsed = messages | "Parse" >> beam.ParDo(parse).with_output_types(
            KV[int, bytes]).with_outputs(DEAD_LETTERS, main="valid")
        unique = parsed.valid | "Dedupe" >> _Dedupe()
        rows = (unique
                | "Window" >> beam.ParDo(CutWindowsFn(self.spec, None))
                | "Aggregate" >> _Aggregate(self.spec, None))
        by_dim = None
        if self.breakdown:
            by_dim = (unique
                      | f"{self.breakdown_label}Window" >> beam.ParDo(
                          CutWindowsFn(self.spec, self.breakdown))
                      | self.breakdown_label >> _Aggregate(self.spec, self.breakdown))
        return rows, parsed[DEAD_LETTERS], by_dim


class _Dedupe(beam.PTransform):
    def expand(self, bucketed):
        return (bucketed
                | "GroupByBucket" >> beam.GroupByKey()
                | "FirstDelivery" >> beam.ParDo(FirstDeliveryFn()).with_output_types(Chunk))


class _Aggregate(beam.PTransform):
    def __init__(self, spec: WindowSpec, breakdown: str | None):
        super().__init__()
        self.spec, self.breakdown = spec, breakdown

    def expand(self, accumulators):
        if self.spec.window_fn().is_merging():
            stats = (accumulators
                     | "MergeSessions" >> beam.CombineGlobally(MergeSessionsFn(self.spec))
                     | "EachSession" >> beam.FlatMap(_extracted))
        else:
            stats = accumulators | "Combine" >> beam.CombinePerKey(MergePartsFn())
        return stats | "FormatRows" >> beam.ParDo(WindowRowFn(self.breakdown))


def _extracted(sessions: list) -> Iterator[tuple[tuple, dict]]:
    stats = TransactionStatsFn()
    for key, acc in sessions:
        yield key, stats.extract_output(acc)

"""Per-window statistics, exact: count, sum, average, min and max of transaction amounts.

Money is summed as Decimal in a 38-digit context, so 0.10 added ten million times is exactly
1000000.00; the accumulator is four values, and each bundle's transactions are folded into one per window
before the shuffle (:class:`PrecombineFn`).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

import apache_beam as beam
from apache_beam.coders import Coder, registry
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampCombiner
from apache_beam.typehints import KV
from apache_beam.utils.windowed_value import create as windowed_value

from txpipe import metrics, money
from txpipe.contract import UTC, Transaction, from_micros

#: Accumulator: [count, sum, min, max]; min / max are None while the count is 0.
Accumulator = list


class TransactionStatsFn(beam.CombineFn):
    """Amounts (Decimal) -> {count, sum, avg, min, max}."""

    def create_accumulator(self) -> Accumulator:
        return [0, money.ZERO, None, None]

    def add_input(self, acc: Accumulator, amount: Decimal) -> Accumulator:
        acc[0] += 1
        acc[1] = money.CONTEXT.add(acc[1], amount)
        if acc[2] is None or amount < acc[2]:
            acc[2] = amount
        if acc[3] is None or amount > acc[3]:
            acc[3] = amount
        return acc

    def add_inputs(self, acc: Accumulator, amounts) -> Accumulator:
        return self.merge_accumulators([acc, self.accumulate(list(amounts))])

    @staticmethod
    def accumulate(amounts: list[Decimal]) -> Accumulator:
        """The accumulator of many amounts at once (what add_input would reach one by one)."""
        if not amounts:
            return [0, money.ZERO, None, None]
        return next(TransactionStatsFn.accumulate_runs(amounts, [0], [len(amounts)]))

    @staticmethod
    def accumulate_runs(amounts: list[Decimal], starts: list[int], ends: list[int]
                        ) -> Iterator[Accumulator]:
        """The accumulator of each non-empty run ``amounts[start:end]``: the batched route folds
        a chunk's part of each window with it."""
        with localcontext(money.CONTEXT):  # sum() then adds in the 38-digit context
            for start, end in zip(starts, ends, strict=True):
                run = amounts[start:end]
                yield [end - start, sum(run, money.ZERO), min(run), max(run)]

    def merge_accumulators(self, accumulators) -> Accumulator:
        merged = self.create_accumulator()
        for count, total, lo, hi in accumulators:
            if not count:
                continue
            merged[0] += count
            merged[1] = money.CONTEXT.add(merged[1], total)
            if merged[2] is None or lo < merged[2]:
                merged[2] = lo
            if merged[3] is None or hi > merged[3]:
                merged[3] = hi
        return merged

    def extract_output(self, acc: Accumulator) -> dict:
        count, total, lo, hi = acc
        return {
            "total_transactions": count,
            "total_amount_sum": total,
            "avg_transaction_amount": money.average(total, count) if count else None,
            "max_amount": hi,
            "min_amount": lo,
        }


class MergeAccumulatorsFn(TransactionStatsFn):
    """Partial accumulators (of chunks of a window) -> the window's stats."""

    def add_input(self, acc: Accumulator, partial: Accumulator) -> Accumulator:
        return self.merge_accumulators([acc, partial])

    def add_inputs(self, acc: Accumulator, partials) -> Accumulator:
        return self.merge_accumulators([acc, *partials])


def window_bounds(win) -> tuple[datetime, datetime]:
    return from_micros(win.start.micros), from_micros(win.end.micros)


class FormatRowFn(beam.DoFn):
    """(key, stats) + the window and pane they belong to -> an output row
    (schema.WINDOW_STATS); the key is the dimension value when ``dimension`` is given."""

    def __init__(self, dimension: str | None = None):
        self._dimension = dimension
        self._panes = Metrics.counter(metrics.NAMESPACE, metrics.PANES)

    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        key, stats = element
        extra = {"dimension_value": key} if self._dimension else {}
        start, end = window_bounds(win)
        self._panes.inc()
        yield window_row(start, end, stats, pane_timing_name(pane), pane.index, extra)


def window_row(start: datetime, end: datetime, stats: dict, timing: str, index: int,
               extra: dict | None = None) -> dict:
    """The output row of one window pane (schema.WINDOW_STATS), defined once for both plans."""
    return {
        "window_start_time": start,
        "window_end_time": end,
        **(extra or {}),
        **stats,
        "pane_timing": timing,
        "pane_index": index,
        "processed_at": datetime.now(UTC),
    }


def pane_timing_name(pane) -> str:
    from apache_beam.utils.windowed_value import PaneInfoTiming

    return PaneInfoTiming.to_string(pane.timing)


class Partial(list):
    """A bundle's accumulator of one key and window on its way to the merge: the type its
    shuffle coder is found by."""


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _amount(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class PartialCoder(Coder):
    """The four values in one pickle, amounts as their exact text: Beam's default coder
    pickles each Decimal on its own, several times the cost per accumulator."""

    def encode(self, value: Partial) -> bytes:
        count, total, lo, hi = value
        return pickle.dumps((count, str(total), _text(lo), _text(hi)), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Partial:
        count, total, lo, hi = pickle.loads(encoded)
        return Partial((count, Decimal(total), _amount(lo), _amount(hi)))

    def is_deterministic(self) -> bool:
        return False  # values only: a shuffle key never is one

    def to_type_hint(self):
        return Partial


registry.register_coder(Partial, PartialCoder)


def _window_key(win, value) -> int:
    return win.start.micros


def _one_key(win, value) -> None:
    return None


def _value_key(win, value) -> str:
    return value


class PrecombineFn(beam.DoFn):
    """Folds a bundle's transactions into one :class:`TransactionStatsFn` accumulator per key
    and window, emitted in that window when the bundle ends — Beam's combiner lifting (its
    partial GroupByKey), done here because the runners decline to lift under this trigger.

    The trigger machinery then sees one accumulator where it saw a bundle's elements of a
    window, and decides exactly as before: a runner hands it a key's elements a bundle at a
    time, expiry is decided per window (all of an accumulator's elements share it), and the
    trigger's count is AfterCount(1) — one accumulator fires it as its first element did. The
    timestamp is the one Beam's own lifting gives — the window's end under the default
    timestamp combiner (:class:`PrecombineTimedFn` for the others) — so holds and output times
    do not change. Merging windows combine only within an identical proto-window: Beam drops
    an element whose own proto-window has expired before merging, so elements of different
    proto-windows must reach it apart.

    It takes each element with all its windows (a transaction is in several sliding windows):
    asking for one window would make the runner invoke it once per window. The table is keyed
    by window and ``dimension`` value; ``shuffle_key(window, value)`` gives the key the merge
    shuffles by, once per entry.
    """

    #: Entries kept before flushing mid-bundle (Beam's lifting flushes too): memory bound.
    MAX_ENTRIES = 10_000

    def __init__(self, shuffle_key, dimension: str | None = None):
        self._shuffle_key, self._dimension = shuffle_key, dimension
        self._stats = TransactionStatsFn()

    #: Combines an entry's timestamps (None: the accumulator takes its window's end).
    _combine = None

    def start_bundle(self):
        self._table: dict = {}

    def process(self, tx, windowed=beam.DoFn.WindowedValueParam):
        value = (getattr(tx, self._dimension) or "") if self._dimension else None
        table, add = self._table, self._stats.add_input
        for win in windowed.windows:
            key = (win, value)
            entry = table.get(key)
            if entry is None:
                if len(table) >= self.MAX_ENTRIES:
                    yield from self.finish_bundle()
                    table = self._table
                entry = table[key] = [Partial(self._stats.create_accumulator()),
                                      self._first_timestamp(windowed)]
            elif self._combine is not None:
                entry[1] = self._combine(entry[1], windowed.timestamp)
            add(entry[0], tx.amount)

    def finish_bundle(self):
        table, self._table = self._table, {}
        for (win, value), (acc, timestamp) in table.items():
            yield windowed_value((self._shuffle_key(win, value), acc),
                                 self._timestamp(win, timestamp), (win,))

    def _first_timestamp(self, windowed):
        return None  # the window's end is the accumulator's

    def _timestamp(self, win, timestamp) -> int:
        return win.max_timestamp().micros


class PrecombineTimedFn(PrecombineFn):
    """:class:`PrecombineFn` under a timestamp combiner other than the window's end: each
    accumulator's timestamp is its transactions' timestamps combined by it."""

    def __init__(self, shuffle_key, dimension, timestamp_combiner, window_fn):
        super().__init__(shuffle_key, dimension)
        self._timestamp_combiner, self._window_fn = timestamp_combiner, window_fn

    def setup(self):
        self._combine = TimestampCombiner.get_impl(self._timestamp_combiner,
                                                   self._window_fn).combine

    def _first_timestamp(self, windowed):
        return windowed.timestamp

    def _timestamp(self, win, timestamp) -> int:
        return timestamp.micros


def combine_transactions(transactions, shuffle_key, dimension: str | None = None,
                         label: str = "Combine"):
    """Windowed transactions -> (key, stats) per window pane: each bundle pre-combined
    (``Precombine``), the accumulators merged per key and window after the shuffle (``label``).
    """
    windowing = transactions.windowing
    precombine = (PrecombineFn(shuffle_key, dimension)
                  if windowing.timestamp_combiner == TimestampCombiner.OUTPUT_AT_EOW
                  else PrecombineTimedFn(shuffle_key, dimension, windowing.timestamp_combiner,
                                         windowing.windowfn))
    return (
        transactions
        | "Precombine" >> beam.ParDo(precombine).with_output_types(KV[Any, Partial])
        | label >> beam.CombinePerKey(MergeAccumulatorsFn())
    )


class AggregateWindows(beam.PTransform):
    """Windowed transactions -> one row per window pane.

    Each window is a key of its own (what CombineGlobally would funnel through one key): on
    Dataflow the windows spread over workers instead of making one hot key, and a runner that
    drives triggers key by key does one window's work at a time. Sessions keep one key, as
    their windows merge only within a key.
    """

    def expand(self, transactions):
        merging = transactions.windowing.windowfn.is_merging()
        stats = combine_transactions(transactions, _one_key if merging else _window_key)
        return stats | "FormatRows" >> beam.ParDo(FormatRowFn())


class AggregateByDimension(beam.PTransform):
    """Windowed transactions -> one row per window pane and value of ``dimension``."""

    def __init__(self, dimension: str):
        super().__init__()
        if dimension not in Transaction._fields or dimension in ("amount", "event_time"):
            raise ValueError(f"cannot break down by {dimension!r}")
        self.dimension = dimension

    def expand(self, transactions):
        dim = self.dimension
        return (
            combine_transactions(transactions, _value_key, dim, "CombinePerValue")
            | "FormatRows" >> beam.ParDo(FormatRowFn(dim))
            | "NameDimension" >> beam.Map(lambda row: {**row, "dimension": dim})
        )

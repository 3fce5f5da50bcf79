"""Per-window statistics, exact: count, sum, average, min and max of transaction amounts.

Money is summed as Decimal in a 38-digit context, so 0.10 added ten million times is exactly
1000000.00; the accumulator is four values, so Beam can lift the combine before the shuffle.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, localcontext

import apache_beam as beam
from apache_beam.metrics import Metrics

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
        """The accumulator of many amounts at once (what add_input would reach one by one):
        the batched route folds a chunk's part of a window with it."""
        if not amounts:
            return [0, money.ZERO, None, None]
        with localcontext(money.CONTEXT):  # sum() then adds in the 38-digit context
            total = sum(amounts, money.ZERO)
        return [len(amounts), total, min(amounts), max(amounts)]

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


def _by_window(tx, win=beam.DoFn.WindowParam):
    return win.start.micros, tx.amount


def _one_key(tx):
    return None, tx.amount


class AggregateWindows(beam.PTransform):
    """Windowed transactions -> one row per window pane.

    Each window is a key of its own (what CombineGlobally would funnel through one key): on
    Dataflow the windows spread over workers instead of making one hot key, and a runner that
    drives triggers key by key does one window's work at a time. Sessions keep one key, as
    their windows merge only within a key.
    """

    def expand(self, transactions):
        merging = transactions.windowing.windowfn.is_merging()
        return (
            transactions
            | "KeyByWindow" >> beam.Map(_one_key if merging else _by_window)
            | "Combine" >> beam.CombinePerKey(TransactionStatsFn())
            | "FormatRows" >> beam.ParDo(FormatRowFn())
        )


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
            transactions
            | "KeyByDimension" >> beam.Map(lambda tx: (getattr(tx, dim) or "", tx.amount))
            | "CombinePerValue" >> beam.CombinePerKey(TransactionStatsFn())
            | "FormatRows" >> beam.ParDo(FormatRowFn(dim))
            | "NameDimension" >> beam.Map(lambda row: {**row, "dimension": dim})
        )

"""Exact money: Decimal arithmetic in a context wide enough that sums never round."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

#: Fractional digits of BigQuery NUMERIC and of the DuckDB columns: the scale of stored money.
SCALE = 9
#: 38 digits like NUMERIC / DECIMAL(38, 9): a window would need 10^29 of money to overflow.
CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
_QUANTUM = Decimal(1).scaleb(-SCALE)
_CENT = Decimal("0.01")
ZERO = Decimal(0)


def average(total: Decimal, count: int) -> Decimal:
    """The mean rounded half-even to the stored scale (the only rounding money ever sees)."""
    return CONTEXT.divide(total, Decimal(count)).quantize(_QUANTUM, context=CONTEXT)


def normalize(amount: Decimal) -> Decimal:
    """Drop trailing zeros beyond the cents, keep at least two decimals: 1000000.00, 0.125."""
    reduced = amount.normalize(CONTEXT)
    if reduced.as_tuple().exponent > -2:
        return reduced.quantize(_CENT, context=CONTEXT)
    return reduced


def to_text(amount: Decimal) -> str:
    """Plain decimal text (never exponent notation), as JSON and BigQuery NUMERIC expect: the
    text of :func:`normalize`, written from the reduced amount's own text (a row has four
    amounts, and a sparse replay a row per transaction)."""
    text = f"{amount.normalize(CONTEXT):f}"
    point = text.find(".")
    if point < 0:
        return text + ".00"
    return text + "0" if len(text) - point == 2 else text

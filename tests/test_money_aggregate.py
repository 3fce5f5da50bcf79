"""Exact money: the CombineFn never rounds a sum, merges in any split equal a direct recount,
and the per-dimension breakdown matches a recount per value."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal, localcontext

import apache_beam as beam
import pytest
from collect import Outputs
from hypothesis import given, settings
from hypothesis import strategies as st
from recount import BASE, Tx, expected_average, spell_message

from txpipe import money
from txpipe.aggregate import AggregateByDimension, TransactionStatsFn
from txpipe.pipeline import TransactionStats
from txpipe.windowing import WindowSpec


def test_ten_million_times_ten_cents_is_exactly_one_million():
    fn = TransactionStatsFn()
    ten_cents = Decimal("0.10")
    chunks = []
    for _ in range(10):  # ten bundles of a million, as a runner would split them
        acc = fn.create_accumulator()
        for _ in range(1_000_000):
            acc = fn.add_input(acc, ten_cents)
        chunks.append(acc)
    out = fn.extract_output(fn.merge_accumulators(chunks))
    assert out["total_transactions"] == 10_000_000
    assert out["total_amount_sum"] == Decimal("1000000.00")
    assert money.to_text(out["total_amount_sum"]) == "1000000.00"
    assert out["avg_transaction_amount"] == Decimal("0.100000000")
    assert out["min_amount"] == out["max_amount"] == ten_cents
    assert sum([0.1] * 1000) != 100.0  # what a float accumulator would have done


def test_money_text_is_plain_and_exact():
    assert money.to_text(Decimal("1E+6")) == "1000000.00"
    assert money.to_text(Decimal("0.1")) == "0.10"
    assert money.to_text(Decimal("0.125")) == "0.125"
    assert money.to_text(Decimal("1E-9")) == "0.000000001"
    assert money.to_text(Decimal("999999.990000000")) == "999999.99"
    assert money.to_text(Decimal("123456789012345678901234567890.5")) == (
        "123456789012345678901234567890.50")


def test_average_rounds_half_even_to_nine_places():
    assert money.average(Decimal("1"), 3) == Decimal("0.333333333")
    assert money.average(Decimal("2"), 3) == Decimal("0.666666667")
    assert money.average(Decimal("0.000000005"), 2) == Decimal("0.000000002")  # half to even
    assert money.average(Decimal("0.000000015"), 2) == Decimal("0.000000008")
    assert money.average(Decimal("999999.99") * 3, 3) == Decimal("999999.99")


def test_an_empty_accumulator_extracts_to_nothing():
    fn = TransactionStatsFn()
    out = fn.extract_output(fn.merge_accumulators([fn.create_accumulator()] * 3))
    assert out == {"total_transactions": 0, "total_amount_sum": Decimal(0),
                   "avg_transaction_amount": None, "max_amount": None, "min_amount": None}


amounts = st.builds(
    lambda digits, scale: Decimal(digits).scaleb(-scale),
    st.integers(min_value=1, max_value=10**15 - 1),
    st.integers(min_value=0, max_value=9),
) | st.sampled_from([Decimal(a) for a in ("0.10", "0.20", "999999.99", "0.01", "0.000000001",
                                            "999999999999999")])


def _merge_in_tree(fn, accumulators, rng):
    """Merge in a random tree, as a runner combining partial results might."""
    accumulators = list(accumulators)
    while len(accumulators) > 1:
        rng.shuffle(accumulators)
        k = rng.randint(2, len(accumulators))
        accumulators = [fn.merge_accumulators(accumulators[:k])] + accumulators[k:]
    return accumulators[0]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(amounts, min_size=1, max_size=60), cuts=st.lists(st.integers(0, 60)),
       seed=st.integers(0, 2**32))
def test_any_split_and_merge_equals_a_direct_recount(values, cuts, seed):
    rng = random.Random(seed)
    fn = TransactionStatsFn()
    bounds = sorted({0, len(values), *(c % (len(values) + 1) for c in cuts)})
    parts = [values[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    parts += [[] for _ in range(rng.randint(0, 2))]  # empty bundles happen too
    accumulators = []
    for part in parts:
        acc = fn.create_accumulator()
        if rng.random() < 0.5:
            acc = fn.add_inputs(acc, part)
        else:
            for value in part:
                acc = fn.add_input(acc, value)
        accumulators.append(acc)
    out = fn.extract_output(_merge_in_tree(fn, accumulators, rng))

    with localcontext() as ctx:
        ctx.prec = 80
        total = sum(values, Decimal(0))
    assert out["total_transactions"] == len(values)
    assert out["total_amount_sum"] == total
    assert out["min_amount"] == min(values)
    assert out["max_amount"] == max(values)
    assert out["avg_transaction_amount"] == expected_average(total, len(values))


def test_breakdown_rejects_unknown_fields():
    with pytest.raises(ValueError):
        AggregateByDimension("amount")
    with pytest.raises(ValueError):
        TransactionStats(WindowSpec(), breakdown="no_such_field")


def test_breakdown_per_category_matches_a_recount():
    rng = random.Random(3)
    txs = [(Tx(f"b{i}", Decimal(rng.choice(["0.10", "0.20", "999999.99", "7"])),
               BASE + timedelta(milliseconds=rng.randrange(0, 90_000))),
            rng.choice(["food", "travel", None]))
           for i in range(300)]
    messages = []
    for tx, category in txs:
        raw = spell_message(tx, rng)
        if b'"category"' in raw:  # the generator may add its own; replace it deterministically
            raw = raw.replace(b'"category"', b'"ignored_category"')
        if category is not None:
            raw = raw[:-1] + f', "category": "{category}"}}'.encode()
        messages.append(raw)
    messages += messages[:40]  # re-sends
    out = Outputs()
    with beam.Pipeline() as pipeline:
        result = (pipeline | beam.Create(messages)
                  | TransactionStats(WindowSpec(size_seconds=30), breakdown="category"))
        result.by_dimension | out.keep("rows")

    expected = defaultdict(list)
    for tx, category in txs:
        start = BASE + timedelta(seconds=30 * ((tx.event_time - BASE) // timedelta(seconds=30)))
        expected[(start, category or "")].append(tx.amount)
    rows = out["rows"]
    got = {(row["window_start_time"], row["dimension_value"]): row for row in rows}
    assert len(got) == len(rows) == len(expected)
    for key, values in expected.items():
        row = got[key]
        assert row["dimension"] == "category"
        assert row["window_end_time"] - row["window_start_time"] == timedelta(seconds=30)
        assert row["total_transactions"] == len(values)
        assert row["total_amount_sum"] == sum(values, Decimal(0))
        assert (row["min_amount"], row["max_amount"]) == (min(values), max(values))
        assert row["avg_transaction_amount"] == expected_average(sum(values, Decimal(0)),
                                                                 len(values))
        assert (row["pane_timing"], row["pane_index"]) == ("ON_TIME", 0)


def test_a_partial_crosses_the_shuffle_exactly():
    """The pre-combined accumulator's coder keeps every digit and exponent of its amounts (and
    an empty one's missing min / max): the merge after the shuffle sees what Precombine held."""
    from apache_beam.coders import registry

    from txpipe.aggregate import Partial
    from txpipe.batch import MergePartsFn

    # the element-wise route's shuffle value, and the batched route's lifted accumulator
    coders = (registry.get_coder(Partial), MergePartsFn().get_accumulator_coder())
    for coder, acc in itertools.product(coders, (
                [3, Decimal("0.30"), Decimal("0.10"), Decimal("0.10")],
                [1, Decimal("1E+2"), Decimal("1E+2"), Decimal("1E+2")],
                [2, Decimal("-0.00"), Decimal("-12345678901234567890123456789.012345678"),
                 Decimal("12345678901234567890123456789.012345678")],
                [0, Decimal("0"), None, None])):
        back = coder.decode(coder.encode(Partial(acc)))
        assert type(back) is Partial and back == acc
        assert [str(v) for v in back] == [str(v) for v in acc]  # the same digits, not only ==

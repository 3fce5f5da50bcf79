"""The data looks like commerce: skewed popularity, recurring users, long-tailed exact amounts."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from simulator import MessageKind, SimulationConfig, generate
from simulator.catalog import (
    CATEGORIES,
    COUNTRIES,
    FLOAT_UNFRIENDLY,
    MAX_AMOUNT,
    MAX_AMOUNT_RATE,
    PAYMENT_METHODS,
    Catalog,
)

N = 30_000


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    cfg = SimulationConfig(seed=5, count=N, rate=100.0,
                           start=datetime(2026, 11, 27, tzinfo=UTC))
    out = []
    for m in generate(cfg):
        assert m.kind is MessageKind.VALID
        row = orjson.loads(m.data)
        row["amount"] = m.amount
        out.append(row)
    return out


def test_amounts_are_exact_cents_in_range_with_a_long_tail(rows):
    amounts = [r["amount"] for r in rows]
    assert all(a.as_tuple().exponent == -2 for a in amounts)
    assert all(Decimal("0.01") <= a <= Decimal("999999.99") for a in amounts)
    values = sorted(float(a) for a in amounts)
    median = statistics.median(values)
    assert 15 < median < 60
    assert values[int(0.99 * len(values))] > 8 * median  # long right tail
    assert statistics.mean(values) > 1.5 * median  # skewed, as log-normal money is


def test_float_unfriendly_amounts_appear(rows):
    awkward = Counter(r["amount"] for r in rows if r["amount"] in FLOAT_UNFRIENDLY)
    assert set(awkward) == set(FLOAT_UNFRIENDLY)
    assert sum(awkward.values()) / N == pytest.approx(0.02, abs=0.005)


def test_the_largest_amount_is_rare_but_present():
    rng = random.Random(3)
    draws = 200_000
    hits = sum(Catalog.amount(rng, CATEGORIES[0]) == MAX_AMOUNT for _ in range(draws))
    assert hits / draws == pytest.approx(MAX_AMOUNT_RATE, rel=0.5)


def test_categories_price_differently(rows):
    by_category: dict[str, list[float]] = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(float(r["amount"]))
    medians = {c: statistics.median(v) for c, v in by_category.items()}
    assert set(medians) == {c.name for c in CATEGORIES}
    assert medians["travel"] > 5 * medians["digital_services"]


def test_merchant_popularity_is_skewed(rows):
    counts = Counter(r["merchant_id"] for r in rows).most_common()
    top_tenth = sum(n for _, n in counts[: len(counts) // 10])
    assert top_tenth / N > 0.4  # Zipf: a few merchants dominate
    assert counts[0][1] > 20 * counts[len(counts) // 2][1]


def test_users_recur(rows):
    per_user = Counter(r["user_id"] for r in rows)
    assert len(per_user) < 0.6 * N
    assert per_user.most_common(1)[0][1] >= 50
    assert sum(1 for n in per_user.values() if n > 1) > 0.3 * len(per_user)


def test_countries_currencies_and_methods_are_consistent_and_skewed(rows):
    currency = {code: cur for code, _, cur in COUNTRIES}
    assert all(r["currency"] == currency[r["country"]] for r in rows)
    countries = Counter(r["country"] for r in rows)
    assert set(countries) == set(currency)
    assert countries.most_common(1)[0][0] == "US"
    methods = Counter(r["payment_method"] for r in rows)
    assert set(methods) == {m for m, _ in PAYMENT_METHODS}
    assert methods.most_common(1)[0][0] == "credit_card"

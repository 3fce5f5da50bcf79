"""The simulated economy: merchants, users, countries and payment methods with skewed popularity.

Real transaction streams are dominated by a few big merchants and heavy users, amounts differ by
category and have a long tail. A uniform generator hides exactly the skew that makes windows,
hot keys and outliers interesting, so popularity here follows Zipf's law.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate


@dataclass(frozen=True)
class Category:
    name: str
    weight: float
    median: float  # typical ticket in the transaction's currency unit
    sigma: float  # log-normal spread: larger means a longer tail


CATEGORIES = (
    Category("grocery", 26, 31.0, 0.80),
    Category("restaurants", 18, 24.0, 0.70),
    Category("digital_services", 12, 11.0, 0.90),
    Category("fuel", 9, 48.0, 0.45),
    Category("clothing", 9, 58.0, 0.85),
    Category("entertainment", 7, 19.0, 0.90),
    Category("health", 5, 37.0, 1.00),
    Category("home", 5, 84.0, 1.10),
    Category("electronics", 5, 190.0, 1.20),
    Category("travel", 4, 410.0, 1.10),
)

# (country, relative weight, currency)
COUNTRIES = (
    ("US", 30, "USD"), ("GB", 11, "GBP"), ("DE", 10, "EUR"), ("FR", 8, "EUR"), ("ES", 7, "EUR"),
    ("MX", 6, "MXN"), ("BR", 6, "BRL"), ("IN", 6, "INR"), ("CA", 5, "CAD"), ("JP", 4, "JPY"),
    ("AU", 4, "AUD"), ("NL", 3, "EUR"),
)

PAYMENT_METHODS = (
    ("credit_card", 45), ("debit_card", 30), ("digital_wallet", 15), ("bank_transfer", 5),
    ("buy_now_pay_later", 3), ("gift_card", 2),
)

#: Amounts that binary floating point cannot hold exactly; they expose float-based sums.
FLOAT_UNFRIENDLY = tuple(
    Decimal(a) for a in ("0.10", "0.20", "0.30", "0.57", "0.70", "1.10", "1.15", "4.35")
)
FLOAT_UNFRIENDLY_RATE = 0.02
#: The largest amount, rare enough not to dominate window sums, there to test the extremes.
MAX_AMOUNT = Decimal("999999.99")
MAX_AMOUNT_RATE = 0.0001
MIN_AMOUNT = Decimal("0.01")
MAX_CENTS = 99_999_999  # 999,999.99
HOME_COUNTRY_RATE = 0.9  # the rest are cross-border purchases
PREFERRED_METHOD_RATE = 0.75


class Picker:
    """Weighted choice by bisection over cumulative weights: O(log n), no per-call lists."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, items: tuple, weights: list[float]):
        self._items = items
        self._cum = list(accumulate(weights))
        self._total = self._cum[-1]

    def __call__(self, rng: random.Random):
        return self._items[bisect_right(self._cum, rng.random() * self._total)]


def zipf_weights(n: int, exponent: float) -> list[float]:
    return [1.0 / (rank**exponent) for rank in range(1, n + 1)]


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: Category
    country: str


@dataclass(frozen=True)
class User:
    user_id: str
    country: str
    payment_method: str


@dataclass(frozen=True)
class Purchase:
    """Everything about one transaction except its id and time."""

    amount: Decimal
    user_id: str
    merchant_id: str
    category: str
    country: str
    payment_method: str
    currency: str


class Catalog:
    """A fixed population drawn from its own seed, then sampled for each purchase."""

    def __init__(self, seed: int, merchants: int = 400, users: int = 20_000):
        rng = random.Random(f"catalog/{seed}")
        self._currency = {code: currency for code, _, currency in COUNTRIES}
        self._country = Picker(tuple(c for c, _, _ in COUNTRIES), [w for _, w, _ in COUNTRIES])
        self._method = Picker(tuple(m for m, _ in PAYMENT_METHODS), [w for _, w in PAYMENT_METHODS])
        category = Picker(CATEGORIES, [c.weight for c in CATEGORIES])
        ranked = [
            Merchant(f"m-{i:05d}", category(rng), self._country(rng)) for i in range(merchants)
        ]
        rng.shuffle(ranked)  # popularity rank is independent of the id
        self._merchant = Picker(tuple(ranked), zipf_weights(merchants, 1.1))
        people = [User(f"u-{i:06d}", self._country(rng), self._method(rng)) for i in range(users)]
        rng.shuffle(people)
        # Exponent 0.9 over 20k users: the top 1 % make about a quarter of all purchases.
        self._user = Picker(tuple(people), zipf_weights(users, 0.9))

    def purchase(self, rng: random.Random) -> Purchase:
        user = self._user(rng)
        merchant = self._merchant(rng)
        country = user.country if rng.random() < HOME_COUNTRY_RATE else self._country(rng)
        method = user.payment_method if rng.random() < PREFERRED_METHOD_RATE else self._method(rng)
        return Purchase(
            amount=self.amount(rng, merchant.category),
            user_id=user.user_id,
            merchant_id=merchant.merchant_id,
            category=merchant.category.name,
            country=country,
            payment_method=method,
            currency=self._currency[country],
        )

    @staticmethod
    def amount(rng: random.Random, category: Category) -> Decimal:
        """Log-normal around the category's median, exact to the cent, within 0.01..999999.99."""
        draw = rng.random()
        if draw < MAX_AMOUNT_RATE:
            return MAX_AMOUNT
        if draw < FLOAT_UNFRIENDLY_RATE:
            return FLOAT_UNFRIENDLY[rng.randrange(len(FLOAT_UNFRIENDLY))]
        value = category.median * math.exp(rng.gauss(0.0, category.sigma))
        cents = min(max(round(value * 100), 1), MAX_CENTS)
        return Decimal(cents).scaleb(-2)

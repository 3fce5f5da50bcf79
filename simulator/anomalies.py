"""Labelled anomalies injected into a stream, and how a detector's findings score against them.

Three named scenarios, each confined to one event-time window chosen from the seed:

- ``volume_spike``: one value of a dimension (a merchant by default) does ten times its usual
  volume — every transaction of it in the window comes with nine more like it;
- ``amount_burst``: a burst of large amounts (10,000–100,000) at one merchant, about one extra
  transaction per hundred in the window, all in the same instant — about twice the money a
  window usually holds, so the window's total about triples;
- ``drop_out``: nine in ten messages of the window never arrive (a partial outage upstream).

A message the scenario added, or one of the window's affected series, carries the scenario's
name in ``SimMessage.anomaly``, so the truth manifest lists what was injected from what was
delivered (a window whose every message was dropped has no row to flag, and is not listed).
Injection draws from random generators of its own: outside the chosen windows the stream is
byte for byte the one without anomalies.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson

from simulator.catalog import CATEGORIES, Catalog
from txpipe.contract import encode_message, format_timestamp, to_micros

if TYPE_CHECKING:
    from simulator.config import SimulationConfig
    from simulator.generator import SimMessage


class AnomalyKind(str, Enum):
    VOLUME_SPIKE = "volume_spike"
    AMOUNT_BURST = "amount_burst"
    DROP_OUT = "drop_out"


#: ``--anomalies default``: every scenario, in turn.
DEFAULT_SCENARIOS = tuple(AnomalyKind)
#: The optional message fields a scenario can target, and the series a finding can name.
DIMENSIONS = ("merchant_id", "category", "country", "payment_method", "currency", "user_id")
SPIKE_FACTOR = 10
DROP_FRACTION = 0.9
BURST_SHARE = 0.01  # burst transactions per transaction the window normally has
BURST_MIN = 5
BURST_AMOUNTS = (10_000.0, 100_000.0)  # log-uniform: the burst about triples the window's sum
_CATEGORY = {c.name: c for c in CATEGORIES}


def parse_scenarios(text: str) -> tuple[AnomalyKind, ...]:
    """``"default"`` or a comma-separated list of scenario names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["default"]:
        return DEFAULT_SCENARIOS
    try:
        return tuple(AnomalyKind(n) for n in names)
    except ValueError:
        known = ", ".join(s.value for s in AnomalyKind)
        raise ValueError(f"unknown scenario in {text!r} (one of: {known}, or default)") from None


class Injector:
    """Decides which windows get which scenario, and rewrites the stream passing through it.

    Windows are decided in order from the stream's first one, so the choice depends only on the
    seed, the start and the settings, never on the order in which jitter visits windows.
    Scenarios take turns, so every one is represented.
    """

    def __init__(self, cfg: SimulationConfig, start: datetime):
        self.cfg = cfg
        self._size_us = cfg.window_size * 1_000_000
        self._first = to_micros(start) // self._size_us
        self._next = self._first
        self._plan: dict[int, AnomalyKind | None] = {}
        self._chooser = random.Random(f"anomaly-windows/{cfg.seed}")
        self._rng = random.Random(f"anomalies/{cfg.seed}/{format_timestamp(start)}")
        self._injected = 0
        self._pick = -1
        self._target: dict[int, str] = {}  # window -> the value a spike or burst is about
        self._start = start

    def window_of(self, message: SimMessage) -> int:
        moment = message.event_time or self._start + timedelta(seconds=message.send_offset)
        return to_micros(moment) // self._size_us

    def scenario(self, window: int) -> AnomalyKind | None:
        """One anomaly in each block of ``1 / anomaly_rate`` windows after the warm-up, at a
        seeded place in it that is never the block's last window (so anomalies never touch)."""
        rate = self.cfg.anomaly_rate
        if not rate:
            return None
        block = max(2, round(1 / rate))
        while self._next <= window:
            index = self._next - self._first - self.cfg.anomaly_warmup
            if index >= 0 and index % block == 0:
                self._pick = index + self._chooser.randrange(block - 1)
            chosen = None
            if index >= 0 and index == self._pick:
                scenarios = self.cfg.anomalies
                chosen = AnomalyKind(scenarios[self._injected % len(scenarios)])
                self._injected += 1
            self._plan[self._next] = chosen
            self._next += 1
        return self._plan.get(window)

    def apply(self, message: SimMessage) -> Iterator[SimMessage]:
        window = self.window_of(message)
        scenario = self.scenario(window)
        if scenario is None:
            yield message
        elif scenario is AnomalyKind.DROP_OUT:
            if self._rng.random() >= DROP_FRACTION:
                yield replace(message, anomaly=scenario.value)
        elif message.kind.value != "valid":
            yield message
        elif scenario is AnomalyKind.VOLUME_SPIKE:
            yield from self._spike(message, window)
        else:
            yield from self._burst(message, window)

    def _spike(self, message: SimMessage, window: int) -> Iterator[SimMessage]:
        fields = orjson.loads(message.data)
        dimension = self.cfg.anomaly_dimension
        value = str(fields.get(dimension))
        target = self._target.setdefault(window, value)  # the window's first transaction's
        if value != target:
            yield message
            return
        label = AnomalyKind.VOLUME_SPIKE.value
        yield replace(message, anomaly=label)
        category = _CATEGORY.get(fields.get("category"), CATEGORIES[0])
        for _ in range(SPIKE_FACTOR - 1):
            yield self._extra(message, fields, Catalog.amount(self._rng, category), label)

    def _burst(self, message: SimMessage, window: int) -> Iterator[SimMessage]:
        yield message
        if window in self._target:
            return
        fields = orjson.loads(message.data)
        self._target[window] = str(fields.get("merchant_id"))
        expected = self.cfg.event_rate * self.cfg.window_size
        low, high = (math.log(a) for a in BURST_AMOUNTS)
        for _ in range(max(BURST_MIN, round(expected * BURST_SHARE))):
            amount = Decimal(round(math.exp(self._rng.uniform(low, high)) * 100)).scaleb(-2)
            yield self._extra(message, fields, amount, AnomalyKind.AMOUNT_BURST.value)

    def _extra(self, like: SimMessage, fields: dict[str, Any], amount: Decimal,
               label: str) -> SimMessage:
        """Another transaction like ``like`` (same instant, merchant, user ...), new id."""
        transaction_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        optional = {d: fields.get(d) for d in DIMENSIONS}
        data, attributes = encode_message(transaction_id, amount, like.event_time, **optional)
        return replace(like, data=data, attributes=attributes, transaction_id=transaction_id,
                       amount=amount, anomaly=label)


# ---------------------------------------------------------------------------------------------
# The truth about them, and scoring a detector's findings against it


@dataclass(frozen=True)
class LabelledWindow:
    """One labelled outlier window: an injected scenario, or the catalogue's extreme amount.

    ``series`` lists, per dimension, the values its transactions had: a finding on one of them
    (or on the whole stream) in this window is explained by it. ``everything`` marks a
    scenario that touched every series (a drop-out).
    """

    start: datetime
    end: datetime
    scenario: str
    transactions: int
    series: dict[str, tuple[str, ...]] = field(default_factory=dict)
    everything: bool = False

    def explains(self, start: datetime, dimension: str | None, value: str | None) -> bool:
        if start != self.start:
            return False
        return self.everything or dimension is None or value in self.series.get(dimension, ())

    def to_dict(self) -> dict[str, Any]:
        return {"start": format_timestamp(self.start), "end": format_timestamp(self.end),
                "scenario": self.scenario, "transactions": self.transactions,
                "everything": self.everything, "series": {k: list(v) for k, v in self.series.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelledWindow:
        def when(text: str) -> datetime:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))

        return cls(when(data["start"]), when(data["end"]), data["scenario"],
                   data["transactions"], {k: tuple(v) for k, v in data["series"].items()},
                   data["everything"])


class LabelCollector:
    """Gathers labelled windows from delivered, counted transactions (TruthBuilder feeds it)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[int, str], tuple[int, dict[str, set[str]]]] = {}

    def add(self, window: int, label: str, data: bytes) -> None:
        count, series = self._windows.get((window, label), (0, {}))
        fields = orjson.loads(data)
        for dimension in DIMENSIONS:
            value = fields.get(dimension)
            if value is not None:
                series.setdefault(dimension, set()).add(str(value))
        self._windows[(window, label)] = (count + 1, series)

    def build(self, size_us: int, epoch: datetime) -> tuple[LabelledWindow, ...]:
        out = []
        for (window, label), (count, series) in sorted(self._windows.items()):
            start = epoch + timedelta(microseconds=window * size_us)
            out.append(LabelledWindow(
                start, start + timedelta(microseconds=size_us), label, count,
                {d: tuple(sorted(v)) for d, v in sorted(series.items())},
                everything=label == AnomalyKind.DROP_OUT.value))
        return tuple(out)


@dataclass(frozen=True)
class Finding:
    """A flagged series in a window (any metric): what a precision count counts once."""

    start: datetime
    dimension: str | None
    value: str | None


@dataclass(frozen=True)
class DetectionQuality:
    """A detector's findings against the labelled truth.

    precision = right / (right + wrong): findings explained by an injected scenario over all
    findings except those on windows holding the catalogue's 999,999.99 test amount (real,
    labelled outliers, counted apart as ``extreme`` because whether one stands out depends on
    the stream's rate). recall = injected windows with a finding that they explain / injected.
    """

    right: int
    wrong: int
    extreme: int
    found: int
    injected: int
    by_scenario: dict[str, tuple[int, int]]  # scenario -> (found, injected)
    false_findings: tuple[Finding, ...] = ()
    missed: tuple[LabelledWindow, ...] = ()

    @property
    def precision(self) -> float:
        return self.right / (self.right + self.wrong) if self.right + self.wrong else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.injected if self.injected else 1.0

    def summary(self) -> str:
        scenarios = " ".join(f"{name}={found}/{total}"
                             for name, (found, total) in sorted(self.by_scenario.items()))
        return (f"precision={self.precision:.2f} recall={self.recall:.2f} "
                f"(findings: {self.right} injected, {self.extreme} extreme-amount, "
                f"{self.wrong} unexplained; found {self.found}/{self.injected}: {scenarios})")


def _as_time(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        return value.to_pydatetime()
    return value


def score_findings(anomalies: Iterable[LabelledWindow], extremes: Iterable[LabelledWindow],
                   rows: Iterable[dict[str, Any]],
                   period: tuple[datetime, datetime] | None = None) -> DetectionQuality:
    """Score anomaly rows (``window_start_time``, ``dimension``, ``dimension_value``) — several
    metrics of one series and window are one finding — against the labelled windows.
    ``period``: (first, last) window start to score; labels and findings outside it are left
    out (a detector's warm-up, a stream's partial first and last windows)."""

    def inside(start: datetime) -> bool:
        return period is None or period[0] <= start <= period[1]

    injected = [a for a in anomalies if inside(a.start)]
    natural = [e for e in extremes if inside(e.start)]
    findings = {Finding(_as_time(r["window_start_time"]), r.get("dimension"),
                        r.get("dimension_value")) for r in rows}
    findings = {f for f in findings if inside(f.start)}
    right = wrong = extreme = 0
    false = []
    for f in sorted(findings, key=lambda f: (f.start, f.dimension or "", f.value or "")):
        if any(a.explains(f.start, f.dimension, f.value) for a in injected):
            right += 1
        elif any(e.explains(f.start, f.dimension, f.value) for e in natural):
            extreme += 1
        else:
            wrong += 1
            false.append(f)
    by_scenario: dict[str, list[int]] = {}
    missed = []
    for a in injected:
        hit = any(a.explains(f.start, f.dimension, f.value) for f in findings)
        tally = by_scenario.setdefault(a.scenario, [0, 0])
        tally[0] += hit
        tally[1] += 1
        if not hit:
            missed.append(a)
    found = sum(t[0] for t in by_scenario.values())
    return DetectionQuality(right, wrong, extreme, found, len(injected),
                            {k: (v[0], v[1]) for k, v in by_scenario.items()},
                            tuple(false), tuple(missed))

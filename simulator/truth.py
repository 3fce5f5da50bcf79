"""Ground truth for a run: what a correct pipeline must output, computed from what was sent.

Windows are event-time fixed windows aligned to the epoch, like Beam's ``FixedWindows``. A
transaction counts once however often it was delivered; the first delivery seen is the one
counted, so the truth stays exact even when an original failed to publish but its re-send did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from simulator.anomalies import DetectionQuality, LabelCollector, LabelledWindow, score_findings
from simulator.catalog import MAX_AMOUNT
from simulator.config import SimulationConfig
from simulator.generator import MessageKind, SimMessage
from txpipe import money
from txpipe.contract import EPOCH, Reason, format_timestamp, to_micros


@dataclass(frozen=True)
class WindowTruth:
    """The exact statistics of one window's valid, unique transactions."""

    start: datetime
    end: datetime
    count: int
    sum: Decimal
    min: Decimal
    max: Decimal
    late: int  # of them, sent ``late_seconds`` after their event time
    duplicates: int  # extra deliveries of them, which the pipeline must drop

    @property
    def avg(self) -> Decimal:
        return money.average(self.sum, self.count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_timestamp(self.start), "end": format_timestamp(self.end),
            "count": self.count, "sum": money.to_text(self.sum), "avg": money.to_text(self.avg),
            "min": money.to_text(self.min), "max": money.to_text(self.max),
            "late": self.late, "duplicates": self.duplicates,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowTruth:
        return cls(
            start=_parse_time(data["start"]), end=_parse_time(data["end"]), count=data["count"],
            sum=Decimal(data["sum"]), min=Decimal(data["min"]), max=Decimal(data["max"]),
            late=data["late"], duplicates=data["duplicates"],
        )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Truth:
    """The manifest: per-window statistics plus the faults that must not reach them."""

    window_size: int
    windows: tuple[WindowTruth, ...]
    messages: int  # everything delivered, good and bad
    valid: int  # unique valid transactions (the sum of the window counts)
    duplicates: int
    late: int
    malformed: dict[str, int] = field(default_factory=dict)  # every Reason value, zeros included
    config: dict[str, Any] | None = None
    #: windows with an injected anomaly (simulator.anomalies), and windows holding the
    #: catalogue's 999,999.99 test amount: the labelled outliers a detector is scored against
    anomalies: tuple[LabelledWindow, ...] = ()
    extreme_amounts: tuple[LabelledWindow, ...] = ()

    @property
    def total_sum(self) -> Decimal:
        return sum((w.sum for w in self.windows), Decimal(0))

    def scored_period(self) -> tuple[datetime, datetime] | None:
        """(first, last) window start a detector is scored on: from the end of the anomaly
        warm-up to the window before the last (the stream's edges are partial windows: late
        events before its start, jittered ones missing at its end)."""
        if not self.windows or not self.config or not self.config.get("start"):
            return None
        size = timedelta(seconds=self.window_size)
        start = _parse_time(self.config["start"])
        first = EPOCH + (start - EPOCH) // size * size + self.config.get("anomaly_warmup", 0) * size
        return first, self.windows[-1].start - size

    def score_anomalies(self, rows) -> DetectionQuality:
        """Anomaly rows (schema.ANOMALIES, as dicts) against the labelled windows."""
        return score_findings(self.anomalies, self.extreme_amounts, rows, self.scored_period())

    def window(self, start: datetime) -> WindowTruth | None:
        return next((w for w in self.windows if w.start == start), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_size_seconds": self.window_size, "messages": self.messages,
            "valid": self.valid, "duplicates": self.duplicates, "late": self.late,
            "malformed": dict(self.malformed), "total_sum": money.to_text(self.total_sum),
            "config": self.config, "windows": [w.to_dict() for w in self.windows],
            "anomalies": [a.to_dict() for a in self.anomalies],
            "extreme_amounts": [e.to_dict() for e in self.extreme_amounts],
        }

    def to_json(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        return cls(
            window_size=data["window_size_seconds"],
            windows=tuple(WindowTruth.from_dict(w) for w in data["windows"]),
            messages=data["messages"], valid=data["valid"], duplicates=data["duplicates"],
            late=data["late"], malformed=dict(data["malformed"]), config=data.get("config"),
            anomalies=tuple(LabelledWindow.from_dict(a) for a in data.get("anomalies", ())),
            extreme_amounts=tuple(LabelledWindow.from_dict(e)
                                  for e in data.get("extreme_amounts", ())),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Truth:
        return cls.from_dict(orjson.loads(Path(path).read_bytes()))

    @classmethod
    def from_messages(cls, cfg: SimulationConfig, messages: Iterable[SimMessage]) -> Truth:
        builder = TruthBuilder(cfg.window_size)
        builder.add_all(messages)
        return builder.build(cfg)


class _Window:
    __slots__ = ("count", "sum", "min", "max", "late", "duplicates")

    def __init__(self) -> None:
        self.count = self.late = self.duplicates = 0
        self.sum = money.ZERO
        self.min: Decimal | None = None
        self.max: Decimal | None = None


class TruthBuilder:
    """Fed with delivered messages in any order; builds the :class:`Truth` of what it saw.

    It remembers every transaction id it counted (about 100 bytes each), which is what makes
    duplicates exact; keep it for runs of up to a few million messages.
    """

    def __init__(self, window_size: int):
        self.window_size = window_size
        self._size_us = window_size * 1_000_000
        self._windows: dict[int, _Window] = {}
        self._window_of: dict[str, int] = {}
        self._malformed = dict.fromkeys((r.value for r in Reason), 0)
        self._anomalies = LabelCollector()
        self._extremes = LabelCollector()
        self.messages = self.duplicates = self.late = 0

    def add(self, message: SimMessage) -> None:
        self.messages += 1
        if message.kind is MessageKind.MALFORMED:
            assert message.reason is not None
            self._malformed[Reason(message.reason).value] += 1
            return
        assert message.transaction_id and message.amount is not None and message.event_time
        seen = self._window_of.get(message.transaction_id)
        if seen is not None:
            self.duplicates += 1
            self._windows[seen].duplicates += 1
            return
        key = to_micros(message.event_time) // self._size_us
        self._window_of[message.transaction_id] = key
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        amount = message.amount
        window.count += 1
        window.sum = money.CONTEXT.add(window.sum, amount)
        if window.min is None or amount < window.min:
            window.min = amount
        if window.max is None or amount > window.max:
            window.max = amount
        if message.late:
            window.late += 1
            self.late += 1
        if message.anomaly:
            self._anomalies.add(key, message.anomaly, message.data)
        if amount == MAX_AMOUNT:
            self._extremes.add(key, "extreme_amount", message.data)

    def add_all(self, messages: Iterable[SimMessage]) -> None:
        for message in messages:
            self.add(message)

    def build(self, cfg: SimulationConfig | None = None) -> Truth:
        size = timedelta(seconds=self.window_size)
        windows = []
        for key in sorted(self._windows):
            w = self._windows[key]
            start = EPOCH + timedelta(microseconds=key * self._size_us)
            windows.append(WindowTruth(start, start + size, w.count, w.sum, w.min, w.max,  # type: ignore[arg-type]
                                       w.late, w.duplicates))
        return Truth(
            window_size=self.window_size, windows=tuple(windows), messages=self.messages,
            valid=len(self._window_of), duplicates=self.duplicates, late=self.late,
            malformed=dict(self._malformed), config=cfg.to_dict() if cfg else None,
            anomalies=self._anomalies.build(self._size_us, EPOCH),
            extreme_amounts=self._extremes.build(self._size_us, EPOCH),
        )

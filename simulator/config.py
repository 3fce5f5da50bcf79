"""What one simulation run is: a frozen, validated description that round-trips to a dict.

Everything that shapes the bytes of the stream lives here, so the same config (and seed) always
yields the same stream; the target and the transport are not part of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from txpipe.contract import format_timestamp

#: Speed of the virtual clock when ``rate`` is 0 ("as fast as possible"): event times still need
#: spacing, so unpaced streams are stamped as if 1,000 transactions happened each second.
UNPACED_EVENT_RATE = 1000.0


class SimulationConfigError(ValueError):
    """One setting is out of range; ``field`` names it, the message is one line."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SimulationConfigError(field, message)


def _fraction(value: float, field: str) -> None:
    _check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, field,
           f"must be between 0 and 1 (got {value!r})")


@dataclass(frozen=True)
class SimulationConfig:
    """A seeded stream: how many messages, how fast, which faults, which clock.

    ``start`` is the instant message 0 is sent; ``None`` means "now", fixed when the stream
    begins. Event times are whole milliseconds because that is what the contract transmits.
    """

    seed: int = 1
    count: int = 0  # 0 = endless (bounded by ``duration`` when set)
    rate: float = 2.0  # messages per second on the virtual clock; 0 = as fast as possible
    start: datetime | None = None
    duration: float | None = None  # seconds of stream time
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    late_rate: float = 0.0
    late_seconds: float = 120.0
    jitter_seconds: float = 0.0
    window_size: int = 30
    daily_rhythm: float = 0.0  # 0 = flat rate; 0.6 = the rate swings +-60 % over a UTC day
    # Labelled anomalies (simulator.anomalies): which scenarios, in turn; the share of windows
    # that get one; the dimension a volume spike is about; windows left clean at the start
    # (a detector needs a history before it can score).
    anomalies: tuple[str, ...] = ()
    anomaly_rate: float = 0.05
    anomaly_dimension: str = "category"
    anomaly_warmup: int = 20

    def __post_init__(self) -> None:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed",
               f"must be an integer >= 0 (got {self.seed!r})")
        _check(isinstance(self.count, int) and self.count >= 0, "count",
               f"must be an integer >= 0, 0 = endless (got {self.count!r})")
        _check(isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate >= 0,
               "rate", f"must be a number >= 0, 0 = as fast as possible (got {self.rate!r})")
        if self.duration is not None:
            _check(isinstance(self.duration, (int, float)) and math.isfinite(self.duration)
                   and self.duration > 0, "duration", f"must be > 0 seconds (got {self.duration!r})")
        for name in ("duplicate_rate", "malformed_rate", "late_rate"):
            _fraction(getattr(self, name), name)
        _check(self.duplicate_rate + self.malformed_rate < 1.0, "malformed_rate",
               "duplicate_rate + malformed_rate must be below 1 (valid messages are needed)")
        for name in ("late_seconds", "jitter_seconds"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, name,
                   f"must be a number of seconds >= 0 (got {value!r})")
        _check(isinstance(self.window_size, int) and 0 < self.window_size <= 86_400, "window_size",
               f"must be a whole number of seconds in 1..86400 (got {self.window_size!r})")
        _check(isinstance(self.daily_rhythm, (int, float)) and 0 <= self.daily_rhythm < 1,
               "daily_rhythm", f"must be in [0, 1) (got {self.daily_rhythm!r})")
        self._check_anomalies()
        if self.start is not None:
            _check(isinstance(self.start, datetime) and self.start.tzinfo is not None, "start",
                   f"must be a datetime with a UTC offset (got {self.start!r})")
            # Whole milliseconds in UTC: the precision the contract's timestamps carry.
            start = self.start.astimezone(UTC)
            object.__setattr__(self, "start", start.replace(microsecond=start.microsecond // 1000 * 1000))

    def _check_anomalies(self) -> None:
        from simulator.anomalies import DIMENSIONS, parse_scenarios

        names = self.anomalies
        if isinstance(names, str):
            names = (names,)
        try:
            scenarios = parse_scenarios(",".join(names))
        except ValueError as exc:
            raise SimulationConfigError("anomalies", str(exc)) from None
        object.__setattr__(self, "anomalies", tuple(s.value for s in scenarios))
        _fraction(self.anomaly_rate, "anomaly_rate")
        _check(self.anomaly_dimension in DIMENSIONS, "anomaly_dimension",
               f"must be one of {', '.join(DIMENSIONS)} (got {self.anomaly_dimension!r})")
        _check(isinstance(self.anomaly_warmup, int) and self.anomaly_warmup >= 0,
               "anomaly_warmup", f"must be a whole number of windows >= 0 "
               f"(got {self.anomaly_warmup!r})")

    @property
    def event_rate(self) -> float:
        """Messages per second of the virtual clock that stamps event times."""
        return self.rate or UNPACED_EVENT_RATE

    @property
    def endless(self) -> bool:
        return self.count == 0 and self.duration is None

    def started(self, now: datetime | None = None) -> SimulationConfig:
        """This config with ``start`` fixed (to ``now`` when it was open)."""
        if self.start is not None:
            return self
        return replace(self, start=now or datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["anomalies"] = list(self.anomalies)
        data["start"] = format_timestamp(self.start) if self.start else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SimulationConfigError(sorted(unknown)[0], "is not a simulation setting")
        values = dict(data)
        if isinstance(values.get("start"), str):
            try:
                values["start"] = datetime.fromisoformat(values["start"].replace("Z", "+00:00"))
            except ValueError:
                raise SimulationConfigError("start", f"not an RFC 3339 time: {data['start']!r}") from None
        return cls(**values)

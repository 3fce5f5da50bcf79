"""Event-time windowing and triggering, chosen once from the settings.

Windows are assigned by the event time each transaction carries (set by the parser), never by
arrival time. The trigger fires ON_TIME when the watermark passes the window end, optionally
EARLY every few seconds of processing time before that, and LATE whenever late elements have
arrived (``AfterCount(1)``: late elements that arrive together share a pane) until the allowed
lateness has passed; later data is dropped by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms import trigger, window

from txpipe.config import Accumulation, Settings, WindowType


@dataclass(frozen=True)
class WindowSpec:
    kind: WindowType = WindowType.FIXED
    size_seconds: int = 30
    period_seconds: int | None = None
    gap_seconds: int = 60
    allowed_lateness_seconds: int = 30
    early_firing_seconds: int = 0
    late_firings: bool = True
    accumulation: Accumulation = Accumulation.ACCUMULATING

    def __post_init__(self):
        if self.size_seconds <= 0 or self.gap_seconds <= 0:
            raise ValueError("window size and session gap must be positive")
        if self.period_seconds is not None and not 0 < self.period_seconds <= self.size_seconds:
            raise ValueError("sliding period must be in (0, window size]")
        if self.allowed_lateness_seconds < 0 or self.early_firing_seconds < 0:
            raise ValueError("allowed lateness and early firing period must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowSpec:
        return cls(
            kind=settings.window_type,
            size_seconds=settings.window_size_seconds,
            period_seconds=settings.window_period_seconds,
            gap_seconds=settings.session_gap_seconds,
            allowed_lateness_seconds=settings.allowed_lateness_seconds,
            early_firing_seconds=settings.early_firing_seconds,
            late_firings=settings.late_firings,
            accumulation=settings.accumulation,
        )

    def window_fn(self) -> window.WindowFn:
        if self.kind is WindowType.SLIDING:
            period = self.period_seconds or max(1, self.size_seconds // 2)
            return window.SlidingWindows(self.size_seconds, period)
        if self.kind is WindowType.SESSION:
            return window.Sessions(self.gap_seconds)
        return window.FixedWindows(self.size_seconds)

    def trigger(self) -> trigger.TriggerFn:
        early = (
            trigger.AfterProcessingTime(self.early_firing_seconds)
            if self.early_firing_seconds
            else None
        )
        late = (
            trigger.AfterCount(1)
            if self.late_firings and self.allowed_lateness_seconds
            else None
        )
        return trigger.AfterWatermark(early=early, late=late)

    def accumulation_mode(self):
        if self.accumulation is Accumulation.DISCARDING:
            return trigger.AccumulationMode.DISCARDING
        return trigger.AccumulationMode.ACCUMULATING

    def describe(self) -> str:
        shape = {
            WindowType.FIXED: f"fixed {self.size_seconds}s",
            WindowType.SLIDING: f"sliding {self.size_seconds}s every "
            f"{self.period_seconds or max(1, self.size_seconds // 2)}s",
            WindowType.SESSION: f"sessions with a {self.gap_seconds}s gap",
        }[self.kind]
        early = f", early panes every {self.early_firing_seconds}s" if self.early_firing_seconds else ""
        late = (f"allowed lateness {self.allowed_lateness_seconds}s" if self.late_firings
                else "no late panes (late data dropped)")
        return f"{shape} event-time windows, {late}{early}, {self.accumulation.value} panes"


class WindowTransactions(beam.PTransform):
    """Assign each transaction to its event-time window(s) with the spec's trigger."""

    def __init__(self, spec: WindowSpec):
        super().__init__()
        self.spec = spec

    def expand(self, transactions):
        spec = self.spec
        # Without late firings no pane could carry late data, and Beam rejects a trigger that
        # finishes while lateness is allowed ("may lose data"): late data is dropped instead.
        lateness = spec.allowed_lateness_seconds if spec.late_firings else 0
        return transactions | "AssignWindows" >> beam.WindowInto(
            spec.window_fn(),
            trigger=spec.trigger(),
            accumulation_mode=spec.accumulation_mode(),
            allowed_lateness=lateness,
        )

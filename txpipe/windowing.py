"""Event-time windowing and triggering, chosen once from the settings.

Windows are assigned by the event time each transaction carries (set by the parser), never by
arrival time. The trigger fires ON_TIME when the watermark passes the window end, optionally
EARLY every few seconds of processing time before that, and LATE whenever late elements have
arrived (``AfterCount(1)``: late elements that arrive together share a pane) until the allowed
lateness has passed; later data is dropped by the runner.

The assignment is Beam's WindowInto with the spec's WindowFn (:class:`AssignWindows`), which
asks a fixed or sliding WindowFn once per phase of its period instead of once per
transaction (:class:`WindowAssigner`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from apache_beam.utils.windowed_value import create as windowed

from txpipe.config import Accumulation, Settings, WindowType

#: The windows of a message as a source emits it, and of a transaction until Window.
GLOBAL = (window.GlobalWindow(),)
_GLOBAL_END = window.GlobalWindow().max_timestamp().micros


def in_global_window(value) -> WindowedValue:
    """``value`` as a DoFn's ``finish_bundle`` must emit it (a WindowedValue): in the global
    window, stamped at its end, as Beam stamps what a bundle's end emits."""
    return windowed(value, _GLOBAL_END, GLOBAL)


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


#: The WindowFns whose assignment repeats every period (exactly these: a subclass may assign
#: otherwise), which :class:`WindowAssigner` takes.
PERIODIC = (window.FixedWindows, window.SlidingWindows)


class WindowAssigner:
    """The windows a fixed or sliding Beam WindowFn assigns to a timestamp, asked of the
    WindowFn once per phase of its period instead of once per timestamp.

    Their windows start and end on multiples of a grain (the gcd of size, period and offset):
    every timestamp between two multiples gets the same windows. And the pattern repeats
    every period (a fixed window's size): a stretch a whole number of periods later gets the
    same windows that much later. So the WindowFn's own ``assign`` is asked once for each
    stretch of the first period, and every other stretch's windows are those, shifted — a
    sparse input (a window per transaction) no longer asks it per transaction.
    """

    def __init__(self, window_fn: window.WindowFn):
        if type(window_fn) not in PERIODIC:
            raise TypeError(f"a fixed or sliding WindowFn assigns by period, not {window_fn!r}")
        self.window_fn = window_fn
        period = getattr(window_fn, "period", window_fn.size).micros
        self.grain = math.gcd(window_fn.size.micros, period, window_fn.offset.micros)
        self.offset = window_fn.offset.micros
        self._period, self._phases = period, period // self.grain
        self._phase: dict[int, tuple[tuple[int, int], ...]] = {}
        self.cache: dict[int, tuple] = {}  # stretch -> its Beam windows (the element-wise route)
        self.interned: dict = {}

    def __call__(self, micros: int) -> tuple[tuple[int, int], ...]:
        """(start, end) micros of every window ``micros`` falls in."""
        turn, phase = divmod((micros - self.offset) // self.grain, self._phases)
        bounds = self._phase.get(phase)
        if bounds is None:
            if len(self._phase) > 1 << 16:  # a period of very many grains (a 1 µs offset)
                self._phase.clear()
            moment = Timestamp(micros=phase * self.grain + self.offset)
            bounds = self._phase[phase] = tuple(
                (w.start.micros, w.end.micros)
                for w in self.window_fn.assign(window.WindowFn.AssignContext(moment)))
        shift = turn * self._period
        return tuple((start + shift, end + shift) for start, end in bounds)

    def windows(self, micros: int) -> tuple:
        """The WindowFn's windows of ``micros``."""
        stretch = (micros - self.offset) // self.grain
        found = self.cache.get(stretch)
        if found is None:
            if len(self.cache) > 1 << 16:
                self.cache.clear()
                self.interned.clear()
            # one object per window, whichever stretch asked: a consumer's table keyed by
            # window then finds it by identity instead of comparing bounds (Python, in Beam)
            found = self.cache[stretch] = tuple(
                self.interned.setdefault(w, w) for w in (
                    window.IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))
                    for start, end in self(micros)))
        return found


class AssignWindowsFn(beam.DoFn):
    """What Beam's WindowInto does to each element — the WindowFn assigns its windows from its
    timestamp — but a fixed or sliding WindowFn is asked once per phase of its period
    (:class:`WindowAssigner`): its ``assign`` does Timestamp arithmetic in Python, several
    microseconds per element. Any other WindowFn is asked per element, as Beam does."""

    def __init__(self, windowing):
        self.windowing = windowing

    def setup(self):
        fn = self.windowing.windowfn
        self._assigner = WindowAssigner(fn) if type(fn) in PERIODIC else None

    def process(self, element, win=beam.DoFn.WindowParam,
                windowed_value=beam.DoFn.WindowedValueParam):
        # WindowParam: called once per window of the input, as Beam's WindowInto's DoFn is
        micros = windowed_value.timestamp_micros
        if self._assigner is not None:
            wins = self._assigner.windows(micros)
        else:
            wins = self.windowing.windowfn.assign(window.WindowFn.AssignContext(
                windowed_value.timestamp, element=element, window=win))
        yield windowed(element, micros, wins)


class AssignWindows(beam.WindowInto):
    """Beam's WindowInto — the same windowing strategy on its output, trigger and all — sent
    to the runner as the ParDo it is built on, with :class:`AssignWindowsFn`. WindowInto's own
    runner form is the assign-windows primitive, which a portable runner (the FnApiRunner,
    Dataflow's SDK harness) runs with Beam's per-element DoFn instead."""

    WindowIntoFn = AssignWindowsFn

    def to_runner_api_parameter(self, context, **extra_kwargs):
        return beam.ParDo.to_runner_api_parameter(self, context, **extra_kwargs)


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
        return transactions | "AssignWindows" >> AssignWindows(
            spec.window_fn(),
            trigger=spec.trigger(),
            accumulation_mode=spec.accumulation_mode(),
            allowed_lateness=lateness,
        )

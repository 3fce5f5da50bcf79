"""TestStream scenarios for the notebooks: a story of arrivals, watermark advances and waits
(:class:`Scenario`), run through txpipe's TransactionStats on the streaming DirectRunner
(:func:`run_scenario`), each pane placed at the step that fired it and checked against the Beam
model; and :class:`Bucket`, which brings a local run's rows back to the notebook (``ib.collect``
cannot run a TestStream).
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd

from txpipe import money
from txpipe.contract import encode_message, to_micros
from txpipe.lab.frames import NOTEBOOK_START


@dataclass
class Bucket:
    """Rows a pipeline on a local runner hands back to the notebook — the only boilerplate a
    DirectRunner run needs, since ``ib.collect`` cannot run a TestStream.

    ``pcoll | "Keep" >> bucket.keep()`` in the pipeline, then ``bucket.frame()`` after the run.
    Works because this module's functions are pickled by reference: the rows land here.
    """

    name: str
    key: int = field(default_factory=lambda: next(_RUN_IDS))

    def keep(self):
        import apache_beam as beam

        return beam.Map(_keep, self.key)

    def add(self, row) -> None:
        """Keep ``row`` from inside a ``DoFn`` of the pipeline (``keep()`` without a step of its
        own: on the DirectRunner every step costs per bundle)."""
        _keep(row, self.key)

    def rows(self) -> list:
        with _RESULTS_LOCK:
            return list(_RESULTS.get(self.key, []))

    def frame(self, sort: tuple[str, ...] = ("window_start_time",)) -> pd.DataFrame:
        """The rows as a DataFrame, sorted by the ``sort`` columns it has (else as they came)."""
        frame = pd.DataFrame(self.rows())
        columns = [c for c in sort if c in frame]
        return frame.sort_values(columns).reset_index(drop=True) if columns else frame



# --- TestStream scenarios ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One TestStream event: elements arrive, the watermark advances, or processing time passes."""

    kind: str  # "arrive" | "watermark" | "wait"
    events: tuple = ()  # (transaction_id, amount text, event second) for "arrive"
    seconds: float = 0.0  # the new watermark (event seconds) or the processing time waited

    def describe(self) -> str:
        if self.kind == "arrive":
            return "arrive " + ", ".join(f"{e[0]}@{e[2]:g}s" for e in self.events)
        if self.kind == "watermark":
            return f"watermark → {self.seconds:g}s"
        return f"wait {self.seconds:g}s (processing time)"


@dataclass
class Scenario:
    """A story told to the pipeline in order: elements with event times (seconds after
    ``start``), watermark advances and waits. The TestStream ends by advancing the watermark
    to infinity, which closes every window."""

    start: datetime = NOTEBOOK_START
    steps: list[Step] = field(default_factory=list)

    def arrive(self, *events: tuple[str, str, float]) -> Scenario:
        self.steps.append(Step("arrive", tuple(events)))
        return self

    def watermark(self, seconds: float) -> Scenario:
        self.steps.append(Step("watermark", seconds=seconds))
        return self

    def wait(self, seconds: float) -> Scenario:
        self.steps.append(Step("wait", seconds=seconds))
        return self

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def test_stream(self):
        from apache_beam.testing.test_stream import TestStream
        from apache_beam.transforms.window import TimestampedValue
        from apache_beam.utils.timestamp import Timestamp

        stream = TestStream().advance_watermark_to(Timestamp(micros=to_micros(self.start)))
        for step in self.steps:
            if step.kind == "arrive":
                elements = []
                for tx_id, amount, second in step.events:
                    when = self.at(second)
                    data, _ = encode_message(tx_id, amount, when)
                    elements.append(TimestampedValue(data, Timestamp(micros=to_micros(when))))
                stream = stream.add_elements(elements)
            elif step.kind == "watermark":
                stream = stream.advance_watermark_to(
                    Timestamp(micros=to_micros(self.at(step.seconds))))
            else:
                stream = stream.advance_processing_time(step.seconds)
        return stream.advance_watermark_to_infinity()

    def elements(self, spec) -> pd.DataFrame:
        """Every element with its arrival step, window, the watermark it met and its fate."""
        size = spec.size_seconds
        rows, wm = [], 0.0
        for number, step in enumerate(self.steps, 1):
            if step.kind == "watermark":
                wm = max(wm, step.seconds)
            if step.kind != "arrive":
                continue
            for tx_id, amount, second in step.events:
                start = second // size * size
                end = start + size
                if wm < end:
                    fate = "on time"
                elif wm < end + spec.allowed_lateness_seconds:
                    fate = "late, kept"
                else:
                    fate = "too late, dropped"
                rows.append({"step": number, "transaction_id": tx_id, "amount": Decimal(amount),
                             "event_s": second, "window_s": f"[{start:g}, {end:g})",
                             "watermark_s": wm, "fate": fate})
        return pd.DataFrame(rows)


_RESULTS: dict[int, list[dict]] = defaultdict(list)
_RUN_IDS = itertools.count()
_RESULTS_LOCK = threading.Lock()


def _keep(row: dict, run_id: int) -> None:
    with _RESULTS_LOCK:
        _RESULTS[run_id].append(row)


def run_scenario(scenario: Scenario, spec) -> pd.DataFrame:
    """Run ``scenario`` through txpipe's TransactionStats on the DirectRunner in streaming
    mode; return its panes in the order they were emitted, each with the step that fired it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from txpipe.pipeline import TransactionStats

    run_id = next(_RUN_IDS)
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    result = (pipeline | "Replay" >> scenario.test_stream()
              | "TransactionStats" >> TransactionStats(spec))
    # Functions of this module are pickled by reference, so the rows land in _RESULTS here.
    result.windows | "Keep" >> beam.Map(_keep, run_id)
    pipeline.run().wait_until_finish()
    with _RESULTS_LOCK:
        rows = _RESULTS.pop(run_id, [])
    panes = pd.DataFrame(rows)
    if panes.empty:
        return panes
    panes["window_s"] = [
        f"[{(r - scenario.start).total_seconds():g}, {(e - scenario.start).total_seconds():g})"
        for r, e in zip(panes["window_start_time"], panes["window_end_time"], strict=True)]
    panes["end_s"] = [(e - scenario.start).total_seconds() for e in panes["window_end_time"]]
    panes = panes.sort_values(["end_s", "pane_index"], kind="stable").reset_index(drop=True)
    panes["fired_at_step"] = _fired_at(scenario, spec, panes)
    panes = panes.sort_values(["fired_at_step", "end_s"], kind="stable").reset_index(drop=True)
    return panes[["fired_at_step", "window_s", "pane_timing", "pane_index", "total_transactions",
                  "total_amount_sum", "min_amount", "max_amount", "end_s"]]


def _fired_at(scenario: Scenario, spec, panes: pd.DataFrame) -> list[int]:
    """The step after which each pane fired, reconstructed from the Beam model and checked
    against the pane's count: ON_TIME at the first watermark step past the window end; EARLY
    at a wait after new elements; LATE at the arrival of late elements within the lateness.
    Raises AssertionError when a pane's count disagrees with that story."""
    elements = scenario.elements(spec)
    accumulating = spec.accumulation.value == "accumulating"
    steps = list(enumerate(scenario.steps, 1))
    fired: list[int] = []
    for window_s, group in panes.groupby("window_s", sort=False):
        end = float(group["end_s"].iloc[0])
        kept = elements[(elements["window_s"] == window_s) & (elements["fate"] != "too late, dropped")]
        arrivals = kept.groupby("step").size()
        on_time = next((n for n, s in steps if s.kind == "watermark" and s.seconds >= end),
                       len(steps) + 1)  # the final advance to infinity
        candidates = {
            "EARLY": [n for n, s in steps if s.kind == "wait" and n < on_time],
            "ON_TIME": [on_time],
            "LATE": [n for n in arrivals.index if n > on_time],
        }
        last, reported = 0, 0
        for _, pane in group.iterrows():
            options = [n for n in candidates.get(pane["pane_timing"], []) if n > last]
            # An early pane needs new elements since the last firing.
            if pane["pane_timing"] == "EARLY":
                options = [n for n in options if arrivals[(arrivals.index > last)
                                                          & (arrivals.index < n)].sum() > 0]
            if not options:
                raise AssertionError(f"cannot place {pane['pane_timing']} pane of {window_s}")
            step = options[0]
            arrived = int(arrivals[arrivals.index < step].sum()
                          + (arrivals.get(step, 0) if pane["pane_timing"] == "LATE" else 0))
            expected = arrived if accumulating else arrived - reported
            if int(pane["total_transactions"]) != expected:
                raise AssertionError(f"{pane['pane_timing']} pane of {window_s}: "
                                     f"{pane['total_transactions']} transactions, the model says "
                                     f"{expected}")
            reported = arrived
            fired.append(step)
            last = step
    order = list(panes.groupby("window_s", sort=False).groups.values())
    flat = [i for idx in order for i in idx]
    out = [0] * len(panes)
    for i, step in zip(flat, fired, strict=True):
        out[i] = step
    return out


def pane_story(panes: pd.DataFrame, scenario: Scenario) -> pd.DataFrame:
    """The panes as a table a reader can follow: when, which window, what it said."""
    names = {n: s.describe() for n, s in enumerate(scenario.steps, 1)}
    names[len(scenario.steps) + 1] = "watermark → ∞ (end of stream)"
    story = pd.DataFrame({
        "after step": [f"{n}: {names[n]}" for n in panes["fired_at_step"]],
        "window (s)": panes["window_s"],
        "pane": [f"{t} #{i}" for t, i in zip(panes["pane_timing"], panes["pane_index"], strict=True)],
        "transactions": panes["total_transactions"].astype(int),
        "sum": [money.to_text(v) for v in panes["total_amount_sum"]],
    })
    story.index = range(1, len(story) + 1)
    return story



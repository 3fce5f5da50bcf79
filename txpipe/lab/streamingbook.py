"""Pictures and tables for the notebooks' event-time lessons: the running example of
"Streaming Systems" (chapters 2 and 4) drawn the way the book draws it, and the watermark of
txpipe's local Pub/Sub read replayed over a simulated stream.

Drawing and tidying only: the pipelines, their triggers and the checks of their panes are
written in the notebooks' cells. The pictures read a ``TestStream``'s own events (elements,
watermark advances, processing-time advances), so a story is written once, as Beam code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

#: Pane colours, as in the notebooks' other timelines.
PANE_COLORS = {"EARLY": "#55a868", "ON_TIME": "#1f3b73", "LATE": "#dd8452"}


def clock(seconds: float) -> str:
    """Epoch seconds as the book prints them: ``12:02:24``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def script(stream) -> tuple[pd.DataFrame, list[tuple[float, float]]]:
    """A TestStream read back as a timeline: its elements, each with the processing time it
    arrived at (the stream's clock starts at its first watermark), and the watermark as
    (processing time, event time) steps. Elements are ``(key, (value, event time))`` pairs."""
    from apache_beam.testing.test_stream import ElementEvent, ProcessingTimeEvent, WatermarkEvent

    now = wm = None
    rows, steps = [], []
    for event in stream._events:
        if isinstance(event, WatermarkEvent):
            wm = float(event.new_watermark)
            now = wm if now is None else now
            steps.append((now, min(wm, 1e12)))
        elif isinstance(event, ProcessingTimeEvent):
            now += float(event.advance_by)
        elif isinstance(event, ElementEvent):
            for tv in event.timestamped_values:
                rows.append({"value": tv.value[1][0], "event": float(tv.timestamp),
                             "arrival": now, "watermark": wm})
    steps.append((now, steps[-1][1]))
    return pd.DataFrame(rows), steps


def fire_times(stream, panes: pd.DataFrame, early_delay: float | None,
               aligned: tuple[float, float] | None = None) -> list[float]:
    """When (processing time) each pane fired, from the stream and what each pane holds.

    ON_TIME: when the watermark passed the window's end (the stream's end for the final
    advance); LATE (``AfterCount(1)``): when its newest element arrived; EARLY: when its
    newest element arrived, or ``early_delay`` after the first element new since the previous
    pane of an overlapping window (``AfterProcessingTime``) if that is later — or, with
    ``aligned=(period, offset)``, at the first instant ``offset + k * period`` not before that
    element. For drawing: the panes themselves come from the pipeline."""
    elements, steps = script(stream)
    arrival = {(r.value, r.event): r.arrival for r in elements.itertuples()}
    end_of_stream = steps[-1][0]
    seen: list[tuple[float, float, set]] = []  # (start, end, contents) of panes so far
    out = []
    for pane in panes.itertuples():
        contents = {tuple(c) for c in pane.contents}
        newest = max((arrival[c] for c in contents), default=None)
        if pane.timing == "ON_TIME":
            fired = next((t for t, w in steps if w >= pane.end), end_of_stream)
        elif pane.timing == "LATE" or not (early_delay or aligned):
            fired = newest
        else:
            before = set().union(*[c for s, e, c in seen if s >= pane.start and e <= pane.end])
            new = [arrival[c] for c in contents - before]
            fired = max(newest, _timer(min(new), early_delay, aligned)) if new else newest
        seen.append((pane.start, pane.end, contents))
        out.append(fired)
    return out


def _timer(first: float, delay: float | None, aligned: tuple[float, float] | None) -> float:
    """When a processing-time trigger set at ``first`` fires: after ``delay``, or at the next
    aligned instant (Java's ``alignedTo(period, offset)``: the instant itself when on one)."""
    if aligned is None:
        return first + (delay or 0)
    period, offset = aligned
    behind = (first - offset) % period
    return first if behind == 0 else first + period - behind


def plot_book(stream, panes: pd.DataFrame, title: str, early_delay: float | None = None,
              aligned: tuple[float, float] | None = None):
    """One of the book's figures: processing time (x) against event time (y), each score at
    its arrival (a cross when no pane holds it: dropped), the watermark, and every pane as a
    bar over its window's event times at the processing time it fired, labelled with its
    value and timing (the book's notation)."""
    import matplotlib.pyplot as plt

    elements, steps = script(stream)
    fig, ax = plt.subplots(figsize=(10, 5))
    lo = min(elements["event"].min(), steps[0][1])
    windows = sorted({(p.start, p.end) for p in panes.itertuples()})
    disjoint = all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))
    for i, (start, end) in enumerate(windows if disjoint else []):  # sessions overlap: no bands
        ax.axhspan(start, end, color="#e6eef7" if i % 2 == 0 else "#f2f2f2", zorder=0)
    counted = {tuple(c) for contents in panes["contents"] for c in contents}
    dropped = [(r.value, r.event) not in counted for r in elements.itertuples()]
    for is_dropped, marker, color, label in ((False, "o", "#4c72b0", "score (at its arrival)"),
                                             (True, "X", "#c44e52", "dropped (in no pane)")):
        rows = elements[[d == is_dropped for d in dropped]]
        if len(rows):
            ax.scatter(rows["arrival"], rows["event"], marker=marker, color=color, s=60,
                       zorder=3, label=label)
        for r in rows.itertuples():
            ax.annotate(str(r.value), (r.arrival, r.event), xytext=(5, -3),
                        textcoords="offset points", fontsize=9, color=color)
    xs = [t for t, _ in steps]
    ws = [max(w, lo - 30) for _, w in steps]
    ax.step(xs, ws, where="post", color="#1f3b73", lw=1.6, ls="--", label="watermark")
    labelled: list[tuple[float, float]] = []  # (fired, window end) of the labels so far
    for pane, fired in zip(panes.itertuples(), fire_times(stream, panes, early_delay, aligned),
                           strict=True):
        color = PANE_COLORS[pane.timing]
        ax.plot([fired, fired], [pane.start, pane.end], color=color, lw=5, alpha=0.75,
                solid_capstyle="butt", zorder=2)
        near = sum(1 for f, e in labelled if abs(f - fired) < 30 and abs(e - pane.end) < 30)
        labelled.append((fired, pane.end))
        ax.annotate(f"{pane.total} {pane.timing}", (fired, pane.end), xytext=(3, -10 - 11 * near),
                    textcoords="offset points", fontsize=8, color=color, fontweight="bold")
    for timing, color in PANE_COLORS.items():
        if (panes["timing"] == timing).any():
            ax.plot([], [], color=color, lw=5, label=f"{timing} pane")
    top = max(elements["event"].max(), max(e for _, e in windows)) + 20
    ax.set_ylim(lo - 30, top)
    ax.set_xlim(min(xs[0], elements["arrival"].min()) - 10, xs[-1] + 25)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(plt.MultipleLocator(60))
        axis.set_major_formatter(plt.FuncFormatter(lambda v, _: clock(v)[:5]))
    ax.set_xlabel("processing time")
    ax.set_ylabel("event time")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def pane_table(panes: pd.DataFrame) -> pd.DataFrame:
    """The panes as the book lists them: window, value, timing and index, and what they hold."""
    return pd.DataFrame({
        "window": [f"[{clock(s)}, {clock(e)})" for s, e in zip(panes["start"], panes["end"],
                                                            strict=True)],
        "value": panes["total"],
        "pane": [f"{t} #{i}" for t, i in zip(panes["timing"], panes["index"], strict=True)],
        "scores": [" + ".join(str(v) for v, _ in sorted(c, key=lambda c: c[1])) or "—"
                   for c in panes["contents"]],
    })


def as_panes(rows: Sequence[dict]) -> pd.DataFrame:
    """Pane rows from a pipeline, ordered by window end, then pane index."""
    panes = pd.DataFrame(list(rows))
    # A session that grew replaces the smaller ones it absorbed: list it after them.
    return panes.sort_values(["end", "start", "index"], ascending=[True, False, True],
                             ).reset_index(drop=True)


def local_read_watermark(frame: pd.DataFrame, pull_seconds: float = 1.0,
                         band_seconds: float | None = None) -> pd.Series:
    """The watermark each message meets under txpipe's local Pub/Sub read
    (:class:`txpipe.lab.direct_pubsub.SourceWatermark`, the class itself), for a reader that
    keeps up and pulls what was sent in each ``pull_seconds``: after each pull, the oldest
    event time pulled that is not behind it, never past the wall clock minus the band."""
    from apache_beam.utils.timestamp import MIN_TIMESTAMP

    from txpipe.lab.direct_pubsub import ESTIMATION_BAND_SECONDS, SourceWatermark

    watermark = SourceWatermark(ESTIMATION_BAND_SECONDS if band_seconds is None else band_seconds)
    micros = lambda ts: int(ts.value // 1000)  # noqa: E731 - pandas ns -> µs
    met = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    pulls = frame["sent_at"].dt.ceil(pd.Timedelta(seconds=pull_seconds))
    for pulled_at, batch in frame.groupby(pulls, sort=True):
        if watermark.micros > MIN_TIMESTAMP.micros:
            met[batch.index] = pd.Timestamp(watermark.micros * 1000, tz="UTC")
        events = [micros(t) for t in batch["event_time"].dropna()]
        watermark.pulled(events, micros(pulled_at))
    return met

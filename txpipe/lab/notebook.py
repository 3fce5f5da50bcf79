"""Helpers the notebooks share, so their cells stay short and hold no pipeline logic.

- the simulated stream as a pandas DataFrame (:func:`messages_frame`) and its lateness;
- an independent pandas recount of the window statistics (:func:`recount`) and the check
  that Beam's windows equal it (:func:`compare_windows`);
- Interactive Beam in a kernel (:func:`interactive_pipeline`, :func:`tidy_collect`);
- TestStream scenarios on the streaming DirectRunner (:class:`Scenario`, :func:`run_scenario`)
  and their timeline pictures (:func:`plot_timeline`);
- matplotlib pictures of window statistics (:func:`plot_windows`) and the stream
  (:func:`plot_stream`);
- conservation of messages (:func:`conservation`) and the exported Dataflow graph
  (:func:`job_steps`).

Everything here is deterministic for a seeded stream with a fixed start: the notebooks are
tested by re-running them and comparing their outputs.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from txpipe import metrics, money
from txpipe.contract import UTC, Reason, encode_message, to_micros

#: The fixed start of every notebook stream: seeded data plus a fixed clock = same outputs.
NOTEBOOK_START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

STAT_COLUMNS = ("total_transactions", "total_amount_sum", "avg_transaction_amount",
                "max_amount", "min_amount")
_OPTIONAL = ("user_id", "merchant_id", "category", "country", "payment_method", "currency")


# --- the stream -------------------------------------------------------------------------------


def messages_frame(messages: Iterable[Any], start: datetime) -> pd.DataFrame:
    """Simulated messages (``simulator.SimMessage``) -> one row each, in send order.

    ``sent_at`` is when the message was sent (the stream's start + its send offset),
    ``delay_s`` how long after its event time it was sent. ``amount`` is a float for plots,
    ``amount_exact`` the Decimal the pipeline sums. Malformed messages have no event time.
    """
    rows = []
    for m in messages:
        body: dict[str, Any] = {}
        if m.event_time is not None:
            try:
                parsed = orjson.loads(m.data)
                body = parsed if isinstance(parsed, dict) else {}
            except orjson.JSONDecodeError:
                body = {}
        sent_at = start + timedelta(seconds=m.send_offset)
        rows.append({
            "index": m.index,
            "kind": getattr(m.kind, "value", m.kind),
            "reason": getattr(m.reason, "value", m.reason),
            "variant": m.variant,
            "late": m.late,
            "transaction_id": m.transaction_id,
            "amount": float(m.amount) if m.amount is not None else float("nan"),
            "amount_exact": m.amount,
            "event_time": m.event_time,
            "sent_at": sent_at,
            **{name: body.get(name) for name in _OPTIONAL},
        })
    frame = pd.DataFrame(rows).set_index("index")
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True).dt.floor("ms")
    frame["delay_s"] = (frame["sent_at"] - frame["event_time"]).dt.total_seconds()
    # Out of order: an earlier event time than some message sent before it.
    seen_max = frame["event_time"].cummax().shift(1)
    frame["out_of_order"] = frame["event_time"].notna() & (frame["event_time"] < seen_max)
    return frame


def lateness(frame: pd.DataFrame, window_seconds: int, allowed_lateness_seconds: int,
             watermark: pd.Series | None = None) -> pd.Series:
    """What a watermark makes of each event, by the window it belongs to.

    ``watermark``: the watermark when each message arrives; by default the send clock itself
    (the DirectRunner's wall-clock watermark). ``on_time``: the watermark had not passed its
    window's end; ``late``: it had, but not the end plus the allowed lateness (a LATE pane
    updates the window); ``dropped``: it had passed that too — the runner drops it.
    Malformed messages (no event time) get ``None``.
    """
    size = pd.Timedelta(seconds=window_seconds)
    window_end = frame["event_time"].dt.floor(size) + size
    grace = pd.Timedelta(seconds=allowed_lateness_seconds)
    wm = frame["sent_at"] if watermark is None else watermark
    verdict = pd.Series("on_time", index=frame.index, dtype=object)
    verdict[wm >= window_end] = "late"
    verdict[wm >= window_end + grace] = "dropped"
    verdict[frame["event_time"].isna()] = None
    return verdict


def data_watermark(frame: pd.DataFrame, holdback_seconds: float) -> pd.Series:
    """A heuristic watermark that follows the data: the newest event time seen so far, minus
    a holdback for the disorder one expects (what Dataflow estimates from the backlog)."""
    newest = frame["event_time"].ffill().cummax()
    return newest - pd.Timedelta(seconds=holdback_seconds)


def perfect_watermark(frame: pd.DataFrame) -> pd.Series:
    """The watermark an oracle would give: the oldest event time still to arrive (this message
    included). No event is ever late under it — but it waits for the slowest straggler."""
    events = frame["event_time"]
    return events[::-1].cummin()[::-1].ffill()


def window_close_delay(frame: pd.DataFrame, watermark: pd.Series, window_seconds: int) -> pd.Series:
    """Per window: how long after its end (send clock) the watermark passed it — how long the
    ON_TIME pane waits. Windows that ended before the first message was sent, or that the
    stream never closes, are left out."""
    size = pd.Timedelta(seconds=window_seconds)
    ends = (frame["event_time"].dropna().dt.floor(size) + size).drop_duplicates().sort_values()
    ends = ends[ends > frame["sent_at"].min()]  # windows that ended before the stream began
    wm = watermark.cummax()
    delays = {}
    for end in ends:
        passed = frame["sent_at"][wm >= end]
        if len(passed):
            delays[end - size] = (passed.iloc[0] - end).total_seconds()
    return pd.Series(delays, name="seconds after the window end", dtype=float)


def position_in_window(frame: pd.DataFrame, window_seconds: int) -> pd.Series:
    """Seconds from the start of its window to each event."""
    size = pd.Timedelta(seconds=window_seconds)
    return (frame["event_time"] - frame["event_time"].dt.floor(size)).dt.total_seconds()


def summary_table(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Counts and shares of the values of ``column``, most frequent first."""
    counts = frame[column].value_counts()
    return pd.DataFrame({"messages": counts, "share": (counts / counts.sum()).round(3)})


# --- the independent recount ------------------------------------------------------------------


def _exact_sum(values) -> Decimal:
    total = money.ZERO
    for value in values:
        total = money.CONTEXT.add(total, value)
    return total


def recount(frame: pd.DataFrame, window_seconds: int) -> pd.DataFrame:
    """Window statistics recomputed with pandas from the simulator's own labels.

    Only messages the simulator generated as ``valid`` count (its duplicates and malformed
    messages do not), each in the fixed event-time window its event time falls into —
    a ``resample`` of the amounts. Sums are exact Decimals, the average is rounded the way
    the pipeline documents (half-even, 9 places).
    """
    valid = frame[frame["kind"] == "valid"].set_index("event_time").sort_index()
    amounts = valid["amount_exact"].resample(f"{window_seconds}s", origin="epoch")
    table = pd.DataFrame({
        "total_transactions": amounts.count(),
        "total_amount_sum": amounts.apply(_exact_sum),
        "max_amount": amounts.apply(lambda s: max(s) if len(s) else None),
        "min_amount": amounts.apply(lambda s: min(s) if len(s) else None),
    })
    table = table[table["total_transactions"] > 0].copy()
    table["avg_transaction_amount"] = [
        money.average(total, count)
        for total, count in zip(table["total_amount_sum"], table["total_transactions"], strict=True)
    ]
    table.index.name = "window_start_time"
    return table[list(STAT_COLUMNS)]


def window_table(rows: pd.DataFrame | Sequence[dict]) -> pd.DataFrame:
    """Window rows (a DataFrame from ``ib.collect`` or a list of dicts) -> the final pane of
    each window, indexed by window start, with the statistics and the pane that carried them.
    ``processed_at`` (wall clock) is left out."""
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows.copy()
    df["window_start_time"] = pd.to_datetime(df["window_start_time"], utc=True)
    df["window_end_time"] = pd.to_datetime(df["window_end_time"], utc=True)
    df = df.sort_values(["window_start_time", "pane_index"])
    final = df.groupby("window_start_time", sort=True).tail(1).set_index("window_start_time")
    final["total_transactions"] = final["total_transactions"].astype(int)
    return final[["window_end_time", *STAT_COLUMNS, "pane_timing", "pane_index"]]


def compare_windows(pipeline: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Window by window, statistic by statistic: does the pipeline equal the recount?

    Returns one row per window with ``equal`` True/False; windows present on one side only
    are rows with ``equal`` False. Decimals compare by value (10.0 == 10.00).
    """
    left = pipeline[list(STAT_COLUMNS)]
    right = expected[list(STAT_COLUMNS)]
    index = left.index.union(right.index)
    out = []
    for start in index:
        both = start in left.index and start in right.index
        equal = both and all(
            Decimal(str(left.at[start, c])) == Decimal(str(right.at[start, c]))
            for c in STAT_COLUMNS)
        out.append({"window_start_time": start, "in_pipeline": start in left.index,
                    "in_recount": start in right.index, "equal": bool(equal)})
    return pd.DataFrame(out).set_index("window_start_time")


def decimals_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """A copy for display: Decimals as plain text with at least two decimals (1000000.00)."""
    out = df.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, Decimal)).any():
            out[column] = out[column].map(
                lambda v: money.to_text(v) if isinstance(v, Decimal) else v)
    return out


# --- Interactive Beam in a kernel -------------------------------------------------------------


def static_outputs() -> None:
    """Make Interactive Beam leave only static outputs in the notebook.

    In a notebook frontend Interactive Beam draws progress spinners and tables with JavaScript
    fetched from CDNs; saved, they show as empty tables and endless "Processing…" on GitHub or
    in an untrusted JupyterLab. After this call it displays nothing of its own: ``ib.collect``
    returns a DataFrame that the cell shows as plain HTML. Leave the call out in a live
    JupyterLab to get its widgets (``ib.show``) back.
    """
    import logging

    from apache_beam.runners.interactive import interactive_environment as ie
    from apache_beam.runners.interactive import utils

    ie.is_in_notebook = lambda: False  # read once, when the environment is first created
    if ie._interactive_beam_env is not None:
        ie._interactive_beam_env._is_in_notebook = False
    utils.ProgressIndicator.__enter__ = lambda self: self
    utils.ProgressIndicator.__exit__ = lambda self, *exc: False
    # "limited Interactive Beam features": true, and chosen.
    logging.getLogger(ie.__name__).setLevel(logging.ERROR)


def plot_graph(pipeline, title: str = "", expand: Sequence[str] = ()):
    """The pipeline's graph as a picture (a PNG that renders anywhere, unlike ``ib.show_graph``,
    which needs Graphviz and JavaScript): its top-level transforms, left to right, each box
    listing the steps inside it; the transforms named in ``expand`` are drawn step by step."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    proto = pipeline.to_runner_api()
    transforms = proto.components.transforms
    nodes: list[str] = []
    for root in proto.root_transform_ids:
        for tid in transforms[root].subtransforms or [root]:
            if transforms[tid].unique_name in expand:
                nodes.extend(transforms[tid].subtransforms)
            else:
                nodes.append(tid)
    produced = {pc: n for n in nodes for pc in transforms[n].outputs.values()}
    edges = sorted({(produced[pc], n) for n in nodes for pc in transforms[n].inputs.values()
                    if pc in produced and produced[pc] != n})
    depth: dict[str, int] = {}
    for n in nodes:  # transforms come in topological order
        depth[n] = max([depth[a] + 1 for a, b in edges if b == n and a in depth], default=0)
    columns: dict[int, list[str]] = defaultdict(list)
    for n in nodes:
        columns[depth[n]].append(n)
    width = max(len(columns), 1)
    height = max(len(c) for c in columns.values()) if columns else 1
    fig, ax = plt.subplots(figsize=(max(6, 2.6 * width), max(2.2, 1.5 * height)))
    where = {}
    for x, col in columns.items():
        for y, n in enumerate(col):
            where[n] = (x * 2.6, -(y - (len(col) - 1) / 2) * 1.5)
    for a, b in edges:
        (x0, y0), (x1, y1) = where[a], where[b]
        ax.annotate("", (x1 - 1.05, y1), (x0 + 1.05, y0),
                    arrowprops={"arrowstyle": "->", "color": "#555", "lw": 1.2})
    for n, (x, y) in where.items():
        t = transforms[n]
        inside = [_short(transforms[s].unique_name) for s in t.subtransforms]
        label = _short(t.unique_name)
        if inside:
            shown = inside if len(inside) <= 4 else inside[:3] + [f"… {len(inside) - 3} more"]
            label += "\n" + "\n".join(f"· {i}" for i in shown)
        ax.add_patch(FancyBboxPatch((x - 1.0, y - 0.6), 2.0, 1.2, boxstyle="round,pad=0.02",
                                    facecolor="#e6eef7", edgecolor="#1f3b73"))
        ax.text(x, y, label, ha="center", va="center", fontsize=7.5)
    xs = [x for x, _ in where.values()] or [0]
    ys = [y for _, y in where.values()] or [0]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _short(name: str, width: int = 28) -> str:
    """A transform's own name: no parent path, no Interactive Beam "[cell]: " prefix."""
    import re

    name = re.sub(r"^\[\d+\]: ", "", name.rsplit("/", 1)[-1])
    return name if len(name) <= width else name[:width - 1] + "…"


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

    def rows(self) -> list:
        with _RESULTS_LOCK:
            return list(_RESULTS.get(self.key, []))

    def frame(self, sort: tuple[str, ...] = ("window_start_time",)) -> pd.DataFrame:
        """The rows as a DataFrame, sorted by the ``sort`` columns it has (else as they came)."""
        frame = pd.DataFrame(self.rows())
        columns = [c for c in sort if c in frame]
        return frame.sort_values(columns).reset_index(drop=True) if columns else frame


def interactive_pipeline():
    """A pipeline on the InteractiveRunner for bounded data, ready for ``ib.show`` / ``collect``.

    ``PipelineOptions([])``: without the empty list, Beam parses the kernel's own argv.
    The underlying runner is the FnApiRunner: the DirectRunner would pick its bundle-based
    engine for the dedupe's processing-time timer, and Interactive Beam then records nothing.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.interactive.interactive_runner import InteractiveRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(InteractiveRunner(underlying_runner=FnApiRunner()),
                         options=PipelineOptions([]))


def tidy_collect(df: pd.DataFrame) -> pd.DataFrame:
    """An ``ib.collect(..., include_window_info=True)`` frame, readable and deterministic.

    Interactive Beam appends three columns — the element timestamp (microseconds), its
    windows and its pane — and names the first ``event_time``, which clashes with a
    transaction's own ``event_time``. They become ``timestamp`` (UTC), ``window``
    (``[start, end)`` in UTC) and ``pane`` (its timing and index).
    """
    df = df.copy()
    names = list(df.columns)
    names[-3:] = ["timestamp", "window", "pane"]
    df.columns = names
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="us", utc=True)
    df["window"] = df["window"].map(_window_text)
    df["pane"] = df["pane"].map(_pane_text)
    return df


def _window_text(windows) -> str:
    from apache_beam.transforms.window import GlobalWindow

    texts = []
    for w in windows if isinstance(windows, (list, tuple)) else [windows]:
        if isinstance(w, GlobalWindow):
            texts.append("global")
        else:
            start = datetime.fromtimestamp(w.start.micros / 1e6, UTC).strftime("%H:%M:%S")
            end = datetime.fromtimestamp(w.end.micros / 1e6, UTC).strftime("%H:%M:%S")
            texts.append(f"[{start}, {end})")
    return ", ".join(texts)


def _pane_text(pane) -> str:
    from apache_beam.utils.windowed_value import PaneInfoTiming

    return f"{PaneInfoTiming.to_string(pane.timing)} #{pane.index}"


# --- window pictures --------------------------------------------------------------------------


def plot_windows(table: pd.DataFrame, title: str = "window statistics"):
    """Count per window (bars), total amount (line), min–max band with the average (log scale)."""
    import matplotlib.pyplot as plt

    starts = table.index
    width = (table["window_end_time"] - starts).dt.total_seconds().to_numpy() / 86_400 * 0.8 \
        if "window_end_time" in table else None
    fig, (ax_count, ax_sum, ax_band) = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    ax_count.bar(starts, table["total_transactions"].astype(int), width=width, align="edge",
                 color="#4c72b0")
    ax_count.set_ylabel("transactions")
    ax_sum.plot(starts, table["total_amount_sum"].astype(float), marker="o", ms=3,
                color="#dd8452")
    ax_sum.set_ylabel("total amount")
    # Steps drawn over [start, end) of every window: repeat the last value at the last end.
    edges = list(starts) + [table["window_end_time"].iloc[-1] if "window_end_time" in table
                            else starts[-1]]
    lo = list(table["min_amount"].astype(float))
    hi = list(table["max_amount"].astype(float))
    avg = list(table["avg_transaction_amount"].astype(float))
    ax_band.fill_between(edges, lo + lo[-1:], hi + hi[-1:], step="post", alpha=0.3,
                         color="#55a868", label="min – max")
    ax_band.step(edges, avg + avg[-1:], where="post", color="#2d6a3e", label="average")
    ax_band.set_yscale("log")
    ax_band.set_ylabel("amount")
    ax_band.legend(loc="upper left", fontsize=8)
    ax_band.set_xlabel("window start (UTC)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_window_kinds(events: pd.DataFrame, fixed: int, sliding: tuple[int, int], gap: int,
                      title: str = ""):
    """One row per kind of window over the same events (event time, x): the fixed windows,
    the sliding windows (staggered so overlaps show) and the sessions with the given gap, each
    window a bar labelled with how many of the events it holds."""
    import matplotlib.pyplot as plt

    times = events["event_time"].dropna().sort_values()
    t0 = times.min().floor(f"{fixed}s")
    secs = ((times - t0).dt.total_seconds()).to_numpy()
    size, period = sliding
    rows: list[tuple[str, list[tuple[float, float]]]] = []
    rows.append((f"fixed {fixed}s", sorted({(s // fixed * fixed, s // fixed * fixed + fixed)
                                             for s in secs})))
    slides = set()
    for s in secs:
        last = s // period * period
        for start in range(int(last) - size + period, int(last) + 1, period):
            slides.add((float(start), float(start + size)))
    rows.append((f"sliding {size}s every {period}s", sorted(slides)))
    sessions, lo, hi = [], secs[0], secs[0]
    for s in secs[1:]:
        if s - hi >= gap:
            sessions.append((lo, hi + gap))
            lo = s
        hi = s
    sessions.append((lo, hi + gap))
    rows.append((f"sessions, gap {gap}s", sessions))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    colors = ["#4c72b0", "#dd8452", "#55a868"]
    for y, (name, spans) in enumerate(reversed(rows)):
        color = colors[len(rows) - 1 - y]
        for i, (a, b) in enumerate(spans):
            n = int(((secs >= a) & (secs < b)).sum())
            offset = 0.18 * (i % 2) if "sliding" in name else 0
            ax.barh(y + offset - 0.09 * ("sliding" in name), b - a, left=a, height=0.3,
                    color=color, alpha=0.55, edgecolor="black", lw=0.6)
            ax.text((a + b) / 2, y + offset - 0.09 * ("sliding" in name), str(n), ha="center",
                    va="center", fontsize=7)
    ax.scatter(secs, [len(rows) - 0.45] * len(secs), marker="|", s=120, color="black",
               label="transactions (event time)")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _ in reversed(rows)])
    ax.set_xlabel(f"event time (s after {t0:%H:%M:%S} UTC)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.set_title(title or "three kinds of window, same events", fontsize=10)
    fig.tight_layout()
    return fig


def plot_panes(panes: pd.DataFrame, title: str = "panes as they were written"):
    """Panes of a live job over wall-clock time: one row per window (y), each pane a marker at
    the time it was processed (x), coloured by its timing and labelled with its count — how a
    window's result evolves EARLY → ON_TIME → LATE."""
    import matplotlib.pyplot as plt

    df = panes.copy()
    df["processed_at"] = pd.to_datetime(df["processed_at"], utc=True)
    df["window_start_time"] = pd.to_datetime(df["window_start_time"], utc=True)
    t0 = df["processed_at"].min()
    df["x"] = (df["processed_at"] - t0).dt.total_seconds()
    starts = sorted(df["window_start_time"].unique())
    row = {w: i for i, w in enumerate(starts)}
    colors = {"EARLY": "#55a868", "ON_TIME": "#1f3b73", "LATE": "#dd8452"}
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.45 * len(starts) + 1.2)))
    for w, group in df.groupby("window_start_time"):
        group = group.sort_values("pane_index")
        y = row[w]
        ax.plot(group["x"], [y] * len(group), color="#bbb", lw=1, zorder=1)
        for _, pane in group.iterrows():
            ax.scatter(pane["x"], y, color=colors.get(pane["pane_timing"], "gray"), s=40, zorder=2)
            ax.annotate(str(int(pane["total_transactions"])), (pane["x"], y), fontsize=6.5,
                        xytext=(0, 5), textcoords="offset points", ha="center")
    for timing, color in colors.items():
        ax.scatter([], [], color=color, label=timing)
    ax.set_yticks(range(len(starts)))
    ax.set_yticklabels([pd.Timestamp(w).strftime("%H:%M:%S") for w in starts], fontsize=7)
    ax.set_ylabel("window start (UTC)")
    ax.set_xlabel(f"processed (s after {t0:%H:%M:%S} UTC)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_stream(frame: pd.DataFrame, verdict: pd.Series | None = None):
    """Event time against send time (left) and the distribution of the delay (right)."""
    import matplotlib.pyplot as plt

    events = frame[frame["event_time"].notna()]
    fig, (ax_t, ax_d) = plt.subplots(1, 2, figsize=(11, 4.2))
    sent = (events["sent_at"] - events["sent_at"].min()).dt.total_seconds()
    event = (events["event_time"] - events["sent_at"].min()).dt.total_seconds()
    groups = verdict[events.index] if verdict is not None else pd.Series("event", events.index)
    colors = {"on_time": "#4c72b0", "late": "#dd8452", "dropped": "#c44e52", "event": "#4c72b0"}
    for name, idx in groups.groupby(groups).groups.items():
        ax_t.scatter(sent[idx], event[idx], s=6, color=colors.get(name, "gray"),
                     label=f"{name} ({len(idx)})")
    top = float(sent.max())
    ax_t.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="sent = event time")
    ax_t.set_xlabel("sent (s after start)")
    ax_t.set_ylabel("event time (s after start)")
    ax_t.legend(loc="upper left", fontsize=8)
    ax_t.set_title("event time vs arrival")
    ax_d.hist(events["delay_s"], bins=60, color="#8172b3")
    ax_d.set_yscale("log")
    ax_d.set_xlabel("sent − event time (s)")
    ax_d.set_ylabel("messages (log)")
    ax_d.set_title("how late events arrive")
    fig.tight_layout()
    return fig


def plot_categories(frame: pd.DataFrame):
    """Transactions per category (bars) and the spread of their amounts (box plot, log)."""
    import matplotlib.pyplot as plt

    valid = frame[frame["kind"] == "valid"]
    order = valid["category"].value_counts().index
    fig, (ax_n, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    counts = valid["category"].value_counts()[order]
    ax_n.barh(order[::-1], counts[::-1], color="#4c72b0")
    ax_n.set_xlabel("transactions")
    ax_n.set_title("how often")
    ax_a.boxplot([valid.loc[valid["category"] == c, "amount"] for c in order[::-1]],
                 orientation="horizontal", tick_labels=list(order[::-1]), flierprops={"markersize": 2})
    ax_a.set_xscale("log")
    ax_a.set_xlabel("amount (log scale)")
    ax_a.set_title("how much")
    fig.tight_layout()
    return fig


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


def plot_timeline(scenario: Scenario, spec, panes: pd.DataFrame, title: str = ""):
    """Event time (y) against arrival order (x): elements by fate, the watermark, windows
    as bands, and each pane marked where it fired, at its window's end."""
    import matplotlib.pyplot as plt

    elements = scenario.elements(spec)
    n_steps = len(scenario.steps) + 1
    fig, ax = plt.subplots(figsize=(10, 4.6))
    size = spec.size_seconds
    highest = max([*elements["event_s"],
                   *[s.seconds for s in scenario.steps if s.kind == "watermark"], size])
    covered = math.ceil(highest / size) * size
    top = covered + size * 0.65  # headroom for the legend and the pane labels
    for i, lo in enumerate(range(0, int(covered), size)):
        ax.axhspan(lo, lo + size, color="#f2f2f2" if i % 2 else "#e6eef7", zorder=0)
        ax.text(n_steps + 0.7, lo + size / 2, f"window [{lo}, {lo + size})", va="center",
                fontsize=8, color="#555")
    style = {"on time": ("o", "#4c72b0"), "late, kept": ("s", "#dd8452"),
             "too late, dropped": ("X", "#c44e52")}
    for fate, (marker, color) in style.items():
        rows = elements[elements["fate"] == fate]
        if len(rows):
            ax.scatter(rows["step"], rows["event_s"], marker=marker, color=color, s=55,
                       zorder=3, label=fate)
            for _, r in rows.iterrows():
                ax.annotate(r["transaction_id"], (r["step"], r["event_s"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    wm_x, wm_y, wm = [0.5], [0.0], 0.0
    for n, step in enumerate(scenario.steps, 1):
        if step.kind == "watermark":
            wm = max(wm, step.seconds)
        if step.kind == "wait":
            ax.axvline(n, color="#8172b3", ls=":", lw=1)
            ax.text(n + 0.05, top * 0.01, f"+{step.seconds:g}s", color="#8172b3", fontsize=7,
                    ha="left", va="bottom")
        wm_x.append(n + 0.5)
        wm_y.append(wm)
    ax.step(wm_x, wm_y, where="pre", color="#1f3b73", lw=1.8, label="watermark")
    colors = {"EARLY": "#55a868", "ON_TIME": "#1f3b73", "LATE": "#dd8452"}
    for _, pane in panes.iterrows():
        x = min(pane["fired_at_step"], n_steps - 0.1)
        ax.scatter([x], [pane["end_s"]], marker="D", s=70, color=colors[pane["pane_timing"]],
                   edgecolor="black", zorder=4)
        ax.annotate(f"{pane['pane_timing']} #{pane['pane_index']}: "
                    f"{int(pane['total_transactions'])} tx",
                    (x, pane["end_s"]), fontsize=7.5, xytext=(2, 8), rotation=35,
                    textcoords="offset points", ha="left", va="bottom",
                    color=colors[pane["pane_timing"]])
    ax.scatter([], [], marker="D", color="white", edgecolor="black", label="pane fired")
    ax.set_xlim(0.5, n_steps + 2.6)
    ax.set_ylim(0, top)
    ax.set_xticks(range(1, n_steps + 1))
    ax.set_xticklabels([str(n) for n in range(1, n_steps)] + ["end"])
    ax.set_xlabel("arrival order (TestStream step)")
    ax.set_ylabel("event time (s)")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.set_title(title or spec.describe(), fontsize=10)
    fig.tight_layout()
    return fig


# --- conservation -----------------------------------------------------------------------------


def conservation(frame: pd.DataFrame, counters: dict[str, int], windows: pd.DataFrame) -> pd.DataFrame:
    """Every message published is accounted for exactly once: the simulator's labels against
    the pipeline's counters and its window rows."""
    kinds = frame["kind"].value_counts()
    published = len(frame)
    valid, dup, bad = (int(kinds.get(k, 0)) for k in ("valid", "duplicate", "malformed"))
    window_total = int(windows["total_transactions"].sum())
    rows = [
        ("messages read", published, counters.get(metrics.READ, 0)),
        ("dead-lettered (bad records)", bad, counters.get(metrics.DEAD_LETTERED, 0)),
        ("valid (parsed)", valid + dup, counters.get(metrics.VALID, 0)),
        ("duplicates dropped", dup, counters.get(metrics.DUPLICATES_DROPPED, 0)),
        ("unique transactions", valid, counters.get(metrics.UNIQUE, 0)),
        ("counted in windows", valid, window_total),
    ]
    table = pd.DataFrame(rows, columns=["", "simulator says", "pipeline counted"]).set_index("")
    table["equal"] = table["simulator says"] == table["pipeline counted"]
    return table


def bad_examples(messages: Iterable[Any], width: int = 70) -> pd.DataFrame:
    """The first bad record of each reason: its payload and the contract's verdict on it."""
    from txpipe.contract import decode_payload, validate

    rows, seen = [], set()
    for m in messages:
        reason = getattr(m.reason, "value", m.reason)
        if reason is None or reason in seen:
            continue
        seen.add(reason)
        verdict = validate(m.data)
        payload = decode_payload(m.data)
        rows.append({"reason": reason, "variant": m.variant,
                     "payload": payload if len(payload) <= width else payload[:width] + "…",
                     "verdict": getattr(verdict, "message", "valid")})
    return pd.DataFrame(rows).sort_values("reason").set_index("reason")


def dead_letter_reasons(frame: pd.DataFrame, counters: dict[str, int]) -> pd.DataFrame:
    """Per reason: how many bad records the simulator made and the pipeline's counter."""
    made = frame[frame["kind"] == "malformed"]["reason"].value_counts()
    rows = [(r.value, int(made.get(r.value, 0)), counters.get(metrics.dead_letter_counter(r), 0))
            for r in Reason]
    table = pd.DataFrame(rows, columns=["reason", "simulator made", "pipeline counted"])
    table["equal"] = table["simulator made"] == table["pipeline counted"]
    return table.set_index("reason")


# --- live, from the Pub/Sub emulator: the one local-streaming driver's -----------------------

from txpipe.lab.live import LiveStack, streaming_interactive_pipeline  # noqa: E402, F401

# --- Dataflow ---------------------------------------------------------------------------------


def job_steps(pipeline_pb_path) -> pd.DataFrame:
    """The named transforms of an exported job (pipeline.pb), two levels deep: what the
    Dataflow console shows as the job graph."""
    from apache_beam.portability.api import beam_runner_api_pb2

    graph = beam_runner_api_pb2.Pipeline()
    with open(pipeline_pb_path, "rb") as fh:
        graph.ParseFromString(fh.read())
    transforms = graph.components.transforms
    rows = []
    for root in graph.root_transform_ids:
        for top_id in transforms[root].subtransforms:
            top = transforms[top_id]
            rows.append({"step": top.unique_name, "inside": ", ".join(
                transforms[s].unique_name.rsplit("/", 1)[-1] for s in top.subtransforms)})
    return pd.DataFrame(rows)


def stderr_to(path):
    """Send fd 2 — Beam's logs and the package build's chatter, from subprocesses too — to a
    file for the duration of a ``with`` block, as ``export-job`` does."""
    from txpipe.export import _stderr_to

    return _stderr_to(Path(path))


def job_summary(template_path) -> pd.DataFrame:
    """What an exported Dataflow job (template.json) asks the service for, in a few rows."""
    import json

    with open(template_path) as fh:
        job = json.load(fh)
    env = job.get("environment", {})
    pool = (env.get("workerPools") or [{}])[0]
    scaling = pool.get("autoscalingSettings", {})
    experiments = env.get("experiments", [])
    options = {d["key"]: d["value"] for d in env.get("sdkPipelineOptions", {}).get("display_data", [])}
    rows = [
        ("job name", job.get("name")),
        ("job type", job.get("type")),
        ("Streaming Engine", "enable_streaming_engine" in experiments),
        ("Runner v2", "use_runner_v2" in experiments),
        ("workers at start", pool.get("numWorkers")),
        ("max workers", scaling.get("maxNumWorkers")),
        ("autoscaling", scaling.get("algorithm")),
        ("machine type", pool.get("machineType")),
        ("project", options.get("project")),
        ("region", options.get("region")),
        ("packages staged", ", ".join(p["name"] for p in pool.get("packages", []))),
        ("SDK container", pool.get("workerHarnessContainerImage")),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")

"""The notebooks' pictures (matplotlib, PNGs that render anywhere): a pipeline's graph, window
statistics, three kinds of window, a live job's panes, and the stream's arrival and
categories. They draw; they run nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pandas as pd


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

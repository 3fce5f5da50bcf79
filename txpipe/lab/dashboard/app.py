"""The page: a Dash app refreshed every couple of seconds from :func:`data.look`.

Charts where people would rather look — transactions per window coloured by the timing of
its last pane, each window's amount (sum, min, max), dead letters by reason, the watermark's
lag and the backlog over the page's lifetime — and under them plain tables of the same
numbers. Dash serves its scripts (React, plotly.js) from its own wheel: nothing is fetched
from a CDN, so the page works offline.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from datetime import UTC, datetime

from txpipe import money
from txpipe.lab import progress as run_progress
from txpipe.lab.dashboard import data

REFRESH_SECONDS = 2.0
#: Samples of lag / backlog the page keeps for its chart (one per refresh: about 20 minutes).
HISTORY = 600
COLOURS = {"EARLY": "#f2a33a", "ON_TIME": "#3b7dd8", "LATE": "#d64545"}


class Board:
    """Reads the warehouse for every refresh and keeps the lag / backlog history."""

    def __init__(self, warehouse: str, tables: data.TableNames = data.TableNames()):
        self.warehouse, self.tables = warehouse, tables
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._snapshot: data.Snapshot | None = None
        self._signature: tuple | None = None
        self.version = 0  # counts the looks that read something new

    def refresh(self) -> tuple[data.Snapshot, run_progress.Progress | None]:
        signature = data.signature(self.warehouse)
        if signature is None or signature != self._signature:  # else nothing was written
            self._snapshot, self._signature = data.look(self.warehouse, self.tables), signature
            self.version += 1
        snap = dataclasses.replace(self._snapshot, taken_at=time.time())
        prog = run_progress.read(self.warehouse)
        lag = lag_seconds(snap, prog)
        with self._lock:
            if not self.history or snap.taken_at - self.history[-1][0] >= 1.0:
                self.history.append((snap.taken_at, lag, None if prog is None else prog.backlog))
        return snap, prog

    def samples(self) -> list[tuple]:
        with self._lock:
            return list(self.history)


def lag_seconds(snap: data.Snapshot, prog: run_progress.Progress | None) -> float | None:
    """The read's watermark behind the clock when the run records it; else how far the newest
    window written ends behind the clock (a replay's is its data's age)."""
    if prog is not None and prog.lag is not None:
        return prog.lag  # as the run last recorded it (a finished run's stays put)
    end = snap.newest_window_end
    return None if end is None else snap.taken_at - end.timestamp()


def _clock(moment: datetime | float | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def _money(amount) -> str:
    return "-" if amount is None else money.to_text(amount)


def status_line(snap: data.Snapshot, prog: run_progress.Progress | None) -> str:
    lag = lag_seconds(snap, prog)
    parts = [f"run {snap.run_id}" if snap.run_id else snap.note or "no rows yet"]
    if prog is not None and prog.watermark is not None:
        parts.append(f"watermark {_clock(prog.watermark)} UTC (lag {lag:.1f} s)")
    elif lag is not None:
        parts.append(f"newest window ended {lag:.1f} s ago (no progress recorded)")
    if prog is not None:
        backlog = "-" if prog.backlog is None else f"{prog.backlog:,}"
        parts.append(f"read {prog.pulled:,}, backlog {backlog}"
                     + (" (draining)" if prog.draining else ""))
    parts.append(f"looked at {_clock(snap.taken_at)} UTC")
    return " · ".join(parts)


# --- figures (plain dicts: plotly.js draws them; building plotly.graph_objects would cost the
# page's process more than the look itself) ----------------------------------------------------


def _figure(title: str, traces: list[dict], **layout) -> dict:
    return {"data": traces, "layout": {
        "title": {"text": title}, "margin": {"l": 50, "r": 60, "t": 40, "b": 40}, "height": 300,
        "template": {"layout": {"plot_bgcolor": "white", "xaxis": {"gridcolor": "#eee"},
                                "yaxis": {"gridcolor": "#eee"}}},
        "legend": {"orientation": "h", "y": -0.2}, **layout}}


def _times(moments) -> list[str]:
    return [m.isoformat() for m in moments]


def windows_figure(snap: data.Snapshot) -> dict:
    traces = []
    for timing in data.PANE_TIMINGS:
        ws = [w for w in snap.windows if w.panes and w.panes[-1] == timing]
        traces.append({"type": "bar", "name": f"last pane {timing}",
                       "x": _times(w.start for w in ws), "y": [w.transactions for w in ws],
                       "marker": {"color": COLOURS[timing]}, "textposition": "outside",
                       "text": [" ".join(p[0] for p in w.panes) for w in ws],
                       "hovertext": [f"panes: {', '.join(w.panes)}" for w in ws]})
    flagged = {a["window_start_time"] for a in snap.anomalies}
    marks = [w for w in snap.windows if w.start in flagged]
    if marks:
        traces.append({"type": "scatter", "mode": "markers", "name": "anomaly",
                       "x": _times(w.start for w in marks), "y": [w.transactions for w in marks],
                       "marker": {"symbol": "x", "size": 12, "color": "black"}})
    return _figure("Transactions per window (E/O/L: its panes)", traces, barmode="overlay")


def amounts_figure(snap: data.Snapshot) -> dict:
    x = _times(w.start for w in snap.windows)
    return _figure("Amount per window: sum, min / max", [
        {"type": "scatter", "mode": "lines+markers", "name": "sum", "x": x,
         "y": [float(w.amount_sum) for w in snap.windows]},
        {"type": "scatter", "mode": "lines", "name": "max", "x": x, "yaxis": "y2",
         "y": [float(w.max_amount or 0) for w in snap.windows], "line": {"dash": "dot"}},
        {"type": "scatter", "mode": "lines", "name": "min", "x": x, "yaxis": "y2",
         "y": [float(w.min_amount or 0) for w in snap.windows], "line": {"dash": "dot"}},
    ], yaxis2={"overlaying": "y", "side": "right", "type": "log", "dtick": 1,
               "title": {"text": "min / max (log)"}})


def dead_letters_figure(snap: data.Snapshot) -> dict:
    reasons = sorted(snap.dead_letters, key=snap.dead_letters.get)
    return _figure(f"Dead letters by reason ({snap.dead_letters_total:,})", [
        {"type": "bar", "orientation": "h", "y": reasons,
         "x": [snap.dead_letters[r] for r in reasons], "marker": {"color": "#8a6bbf"}}],
        margin={"l": 120, "r": 20, "t": 40, "b": 40})


def progress_figure(history) -> dict:
    x = [datetime.fromtimestamp(t, UTC).isoformat() for t, _, _ in history]
    return _figure("Watermark lag and read backlog", [
        {"type": "scatter", "mode": "lines", "name": "watermark lag (s)", "x": x,
         "y": [lag for _, lag, _ in history]},
        {"type": "scatter", "mode": "lines", "name": "backlog (messages)", "x": x,
         "y": [backlog for _, _, backlog in history], "yaxis": "y2"},
    ], yaxis2={"overlaying": "y", "side": "right", "rangemode": "tozero"})


# --- tables ----------------------------------------------------------------------------------


def _table(table_id: str, header: list[str], rows: list[list]):
    from dash import html

    return html.Table(id=table_id, className="numbers", children=[
        html.Thead(html.Tr([html.Th(h) for h in header])),
        html.Tbody([html.Tr([html.Td(str(c)) for c in row]) for row in rows]),
    ])


def windows_rows(snap: data.Snapshot) -> list[list]:
    return [[_clock(w.start), _clock(w.end), f"{w.transactions:,}", _money(w.amount_sum),
             _money(w.min_amount), _money(w.max_amount),
             *(w.pane_count(t) for t in data.PANE_TIMINGS)]
            for w in reversed(snap.windows)]


def progress_rows(snap: data.Snapshot, prog: run_progress.Progress | None) -> list[list]:
    lag = lag_seconds(snap, prog)
    rows = [["watermark lag (s)", "-" if lag is None else f"{lag:.1f}"]]
    if prog is not None:
        rows += [["watermark (UTC)", _clock(prog.watermark)], ["read", f"{prog.pulled:,}"],
                 ["published", "-" if prog.published is None else f"{prog.published:,}"],
                 ["backlog", "-" if prog.backlog is None else f"{prog.backlog:,}"],
                 ["late (behind the watermark)", f"{prog.late:,}"],
                 ["draining", "yes" if prog.draining else "no"]]
    return rows + [["windows written", f"{snap.windows_total:,}"],
                   ["transactions counted", f"{snap.transactions_total:,}"],
                   ["dead letters", f"{snap.dead_letters_total:,}"],
                   ["anomalies", f"{snap.anomalies_total:,}"]]


def tables(snap: data.Snapshot):
    from dash import html

    return [
        html.H3(f"Windows (latest {len(snap.windows)} of {snap.windows_total:,})"),
        _table("windows-table", ["start", "end", "transactions", "sum", "min", "max",
                                 *data.PANE_TIMINGS], windows_rows(snap)),
        html.H3("Dead letters by reason"),
        _table("dead-letters-table", ["reason", "count"],
               [[r, f"{n:,}"] for r, n in sorted(snap.dead_letters.items())]),
        html.H3(f"Anomalies ({snap.anomalies_total:,})"),
        _table("anomalies-table", ["window", "series", "metric", "value", "score", "detector"],
               [[_clock(a["window_start_time"]), a["series"], a["metric"], _money(a["value"]),
                 f"{a['score']:.2f}", a["detector"]] for a in snap.anomalies]),
    ]


def summary_attributes(snap: data.Snapshot) -> dict[str, str]:
    """The headline numbers as data-* attributes of one element, for scripts and tests."""
    return {"data-run": snap.run_id or "", "data-windows": str(snap.windows_total),
            "data-transactions": str(snap.transactions_total),
            "data-dead-letters": str(snap.dead_letters_total),
            "data-anomalies": str(snap.anomalies_total)}


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5em; }
table.numbers { border-collapse: collapse; margin-bottom: 1em; font-variant-numeric: tabular-nums; }
table.numbers td, table.numbers th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
#status { color: #555; }
"""


def make_app(warehouse: str, tables_: data.TableNames = data.TableNames(),
             refresh_seconds: float = REFRESH_SECONDS):
    from dash import Dash, Input, Output, State, dcc, html, no_update

    board = Board(warehouse, tables_)
    app = Dash(__name__, title="txpipe live", update_title=None, serve_locally=True)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")

    def graph(graph_id: str):
        return dcc.Graph(id=graph_id, config={"displayModeBar": False, "staticPlot": False})

    app.layout = html.Div([
        html.H1("txpipe — live"),
        html.P(f"warehouse {warehouse}"),
        html.P(id="status"),
        html.Div(id="summary"),
        html.Div(className="charts", children=[
            graph("windows-chart"), graph("amounts-chart"),
            graph("dead-letters-chart"), graph("progress-chart")]),
        html.Div(id="tables"),
        html.H3("Progress"),
        html.Div(id="progress"),
        dcc.Interval(id="tick", interval=int(refresh_seconds * 1000)),
        dcc.Store(id="shown"),  # which look this browser shows: unchanged, nothing is redrawn
    ])

    @app.callback(
        Output("status", "children"), Output("progress-chart", "figure"),
        Output("progress", "children"), Output("shown", "data"),
        Output("summary", "children"), Output("windows-chart", "figure"),
        Output("amounts-chart", "figure"), Output("dead-letters-chart", "figure"),
        Output("tables", "children"), Input("tick", "n_intervals"), State("shown", "data"))
    def _refresh(_, shown):
        snap, prog = board.refresh()
        always = (status_line(snap, prog), progress_figure(board.samples()),
                  _table("progress-table", ["", ""], progress_rows(snap, prog)), board.version)
        if shown == board.version:
            return always + (no_update,) * 5
        summary = html.Span(
            f"{snap.windows_total:,} windows · {snap.transactions_total:,} transactions · "
            f"{snap.dead_letters_total:,} dead letters · {snap.anomalies_total:,} anomalies",
            id="headline", **summary_attributes(snap))
        return always + (summary, windows_figure(snap), amounts_figure(snap),
                         dead_letters_figure(snap), tables(snap))

    return app


def serve(app, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    """Serve ``app`` until interrupted; ``ready(url)`` once the socket listens."""
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server(host, port, app.server, threaded=True)
    if ready is not None:
        ready(f"http://{host}:{server.server_port}/")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


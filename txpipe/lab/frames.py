"""The notebooks' tables: the simulated stream as a pandas DataFrame and what a watermark
makes of it, an independent recount of the window statistics and the check that Beam's windows
equal it, the books of messages (conservation, dead-letter reasons), and an exported Dataflow
job read back as rows.

Deterministic for a seeded stream with a fixed start: the notebooks are tested by re-running
them and comparing their outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pandas as pd

from txpipe import metrics, money
from txpipe.contract import UTC, Reason
from txpipe.schema import WINDOW_STATS

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
    """Window rows of one run (a DataFrame from ``ib.collect`` or a list of dicts), panes
    accumulating -> the final pane of each window, indexed by window start, with the
    statistics and the pane that carried them. Which pane is final is the warehouse's own rule
    (``schema.Table.stored_panes_sql``), run by DuckDB over the rows' keys, so rows still in the
    notebook read as the warehouse reads them. ``processed_at`` (wall clock) is left out."""
    import duckdb

    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows.copy()
    df["window_start_time"] = pd.to_datetime(df["window_start_time"], utc=True)
    df["window_end_time"] = pd.to_datetime(df["window_end_time"], utc=True)
    keys = df[["window_start_time", "window_end_time", "pane_index"]].assign(
        run_id=df.get("run_id", ""),
        processed_at=df.get("processed_at"),
        row=range(len(df)))
    with duckdb.connect() as con:
        con.register("panes", keys)
        final = [r for (r,) in con.execute(
            f"SELECT row FROM ({WINDOW_STATS.stored_panes_sql('panes')}) "
            "WHERE pane_index = last_pane").fetchall()]
    final = df.iloc[sorted(final)].sort_values("window_start_time").set_index("window_start_time")
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

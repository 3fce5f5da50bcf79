"""The notebooks' helpers: the pandas recount, the window check, lateness and pane placement."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest

from simulator import SimulationConfig, generate
from txpipe.lab import notebook as nb


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    cfg = SimulationConfig(seed=3, count=400, rate=10, start=nb.NOTEBOOK_START,
                           duplicate_rate=0.05, malformed_rate=0.05, late_rate=0.05,
                           late_seconds=45, jitter_seconds=2)
    return nb.messages_frame(generate(cfg), cfg.start)


def test_messages_frame_labels_every_message(frame):
    assert len(frame) == 400
    assert set(frame["kind"]) == {"valid", "duplicate", "malformed"}
    assert frame.loc[frame["kind"] == "malformed", "event_time"].isna().all()
    valid = frame[frame["kind"] == "valid"]
    assert (valid["delay_s"] >= 0).all()


def test_recount_is_exact_and_counts_each_valid_transaction_once(frame):
    table = nb.recount(frame, window_seconds=30)
    valid = frame[frame["kind"] == "valid"]
    assert table["total_transactions"].sum() == len(valid)
    assert sum(table["total_amount_sum"], Decimal(0)) == sum(valid["amount_exact"], Decimal(0))
    assert (table.index.second % 30 == 0).all()
    first = table.iloc[0]
    assert first["min_amount"] <= first["avg_transaction_amount"] <= first["max_amount"]


def test_compare_windows_flags_a_difference_and_a_missing_window(frame):
    expected = nb.recount(frame, window_seconds=30)
    rows = expected.reset_index().assign(
        window_end_time=lambda d: d["window_start_time"] + timedelta(seconds=30),
        pane_timing="ON_TIME", pane_index=0)
    pipeline = nb.window_table(rows)
    assert nb.compare_windows(pipeline, expected)["equal"].all()
    changed = pipeline.copy()
    changed.iloc[0, changed.columns.get_loc("total_amount_sum")] += Decimal("0.01")
    assert not nb.compare_windows(changed, expected)["equal"].iloc[0]
    missing = nb.compare_windows(pipeline.iloc[1:], expected)
    assert not missing["equal"].iloc[0] and not missing["in_pipeline"].iloc[0]


def test_window_table_keeps_the_last_pane_of_each_window():
    start = nb.NOTEBOOK_START
    rows = [
        {"window_start_time": start, "window_end_time": start + timedelta(seconds=30),
         "total_transactions": n, "total_amount_sum": Decimal(n), "avg_transaction_amount": 1,
         "max_amount": 1, "min_amount": 1, "pane_timing": timing, "pane_index": i}
        for i, (n, timing) in enumerate([(2, "EARLY"), (3, "ON_TIME"), (4, "LATE")])
    ]
    table = nb.window_table(list(reversed(rows)))
    assert len(table) == 1
    assert table.iloc[0]["total_transactions"] == 4
    assert table.iloc[0]["pane_timing"] == "LATE"
    # A retried write stored the last pane twice, and a second window has one pane: a row
    # each, as the warehouse's totals view counts them.
    later = {**rows[0], "window_start_time": start + timedelta(seconds=30),
             "window_end_time": start + timedelta(seconds=60), "total_transactions": 7}
    table = nb.window_table([*rows, rows[-1], later])
    assert list(table.index) == [start, later["window_start_time"]]
    assert list(table["total_transactions"]) == [4, 7]


def test_lateness_follows_the_window_end_and_the_allowance():
    start = nb.NOTEBOOK_START
    frame = pd.DataFrame({
        "event_time": pd.to_datetime([start + timedelta(seconds=s) for s in (10, 29, 1, 5)]),
        "sent_at": pd.to_datetime([start + timedelta(seconds=s) for s in (12, 31, 59, 61)]),
    })
    assert list(nb.lateness(frame, 30, 30)) == ["on_time", "late", "late", "dropped"]


def test_watermarks_that_follow_the_data_or_know_it():
    start = nb.NOTEBOOK_START
    frame = pd.DataFrame({
        "event_time": pd.to_datetime([start + timedelta(seconds=s) for s in (10, 40, 1)]),
        "sent_at": pd.to_datetime([start + timedelta(seconds=s) for s in (12, 42, 50)]),
    })
    # The wall clock and a watermark 5 s behind the newest event both find the 1 s event late.
    assert list(nb.lateness(frame, 30, 30)) == ["on_time", "on_time", "late"]
    following = nb.data_watermark(frame, holdback_seconds=5)
    assert list(following - start) == [pd.Timedelta(seconds=s) for s in (5, 35, 35)]
    assert list(nb.lateness(frame, 30, 30, watermark=following)) == ["on_time", "on_time", "late"]
    # The perfect watermark waits for it: nothing is late, and no window closes before it came.
    perfect = nb.perfect_watermark(frame)
    assert list(nb.lateness(frame, 30, 30, watermark=perfect)) == ["on_time"] * 3
    assert nb.window_close_delay(frame, perfect, 30).empty
    assert nb.window_close_delay(frame, following, 30).to_dict() == {start: 12.0}
    assert list(nb.position_in_window(frame, 30)) == [10.0, 10.0, 1.0]


def test_bucket_brings_a_runs_rows_back():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    first, second = nb.Bucket("first"), nb.Bucket("second")
    with beam.Pipeline(options=PipelineOptions([])) as p:
        numbers = p | beam.Create([3, 1, 2])
        numbers | "Double" >> beam.Map(lambda n: {"n": 2 * n}) | "KeepFirst" >> first.keep()
        numbers | "KeepSecond" >> second.keep()
    assert list(first.frame(sort=("n",))["n"]) == [2, 4, 6]
    assert sorted(second.rows()) == [1, 2, 3]


def test_plot_graph_draws_each_step_and_its_edges():
    import apache_beam as beam
    import matplotlib

    matplotlib.use("Agg")
    from apache_beam.options.pipeline_options import PipelineOptions

    p = beam.Pipeline(options=PipelineOptions([]))
    numbers = p | "Read" >> beam.Create([1])
    numbers | "Left" >> beam.Map(str)
    numbers | "Right" >> beam.Map(repr)
    fig = nb.plot_graph(p)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(t.split("\n")[0] for t in texts if t) == ["Left", "Read", "Right"]
    assert texts.count("") == 2  # the arrows: Read -> Left, Read -> Right
    assert len(fig.axes[0].patches) == 3  # one box per step


def test_live_stack_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TXPIPE_NOTEBOOK_EMULATOR", "off")
    stack = nb.LiveStack.connect()
    assert not stack.available
    assert "TXPIPE_NOTEBOOK_EMULATOR=off" in stack.status
    assert stack.stop() == "nothing to stop"


def test_every_helper_a_notebook_calls_is_on_the_facade():
    """The notebooks reach the helpers as ``nb.<name>``; the split modules must keep every
    one of them importable through ``txpipe.lab.notebook``."""
    import json
    import re
    from pathlib import Path

    used = set()
    for path in sorted(Path(__file__).parent.parent.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        used |= set(re.findall(r"\bnb\.([A-Za-z_]\w*)", source))
    assert used, "no nb.* call found: the notebooks moved?"
    assert sorted(name for name in used if not hasattr(nb, name)) == []
    assert set(nb.__all__) <= set(dir(nb))


def test_every_exercise_answer_is_collapsed():
    """An exercise's answer follows a cell that says it is collapsed: it must be."""
    import json
    from pathlib import Path

    answers = 0
    for path in sorted(Path(__file__).parent.parent.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells[:-1]):
            if "".join(cell["source"]).startswith("Answer (collapsed"):
                answers += 1
                hidden = cells[i + 1]["metadata"].get("jupyter", {}).get("source_hidden")
                assert hidden, f"{path.name}: the answer after cell {i} is not collapsed"
    assert answers, "no exercise answer found: the notebooks moved?"

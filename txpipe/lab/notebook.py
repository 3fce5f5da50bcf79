"""What the notebooks import as ``nb`` (``from txpipe.lab import notebook as nb``): one
namespace over the lab's notebook helpers, which live by concern in
:mod:`txpipe.lab.frames` (the stream, recounts, tidy tables), :mod:`txpipe.lab.plots`
(pictures), :mod:`txpipe.lab.scenarios` (:class:`Bucket`),
:mod:`txpipe.lab.kernel` (Interactive Beam in a kernel) and :mod:`txpipe.lab.live` (the
emulator and its topics, :class:`LiveStack`). Most draw and tidy; the Beam code the notebooks
teach stays in their cells.
"""

from __future__ import annotations

from txpipe.lab.frames import (
    NOTEBOOK_START,
    STAT_COLUMNS,
    bad_examples,
    compare_windows,
    conservation,
    data_watermark,
    dead_letter_reasons,
    decimals_as_text,
    job_steps,
    job_summary,
    lateness,
    messages_frame,
    perfect_watermark,
    position_in_window,
    recount,
    summary_table,
    window_close_delay,
    window_table,
)
from txpipe.lab.kernel import static_outputs, stderr_to, tidy_collect
from txpipe.lab.plots import (
    plot_categories,
    plot_graph,
    plot_panes,
    plot_stream,
    plot_window_kinds,
    plot_windows,
)
from txpipe.lab.scenarios import Bucket

__all__ = [
    "NOTEBOOK_START", "STAT_COLUMNS", "Bucket", "LiveStack",
    "bad_examples", "compare_windows", "conservation", "data_watermark", "dead_letter_reasons",
    "decimals_as_text", "job_steps", "job_summary", "lateness", "messages_frame",
    "perfect_watermark", "plot_categories", "plot_graph", "plot_panes", "plot_stream",
    "plot_window_kinds", "plot_windows", "position_in_window", "recount",
    "static_outputs", "stderr_to",
    "summary_table", "tidy_collect", "window_close_delay", "window_table",
]


# --- live, from the Pub/Sub emulator: the one local-streaming driver's -----------------------

from txpipe.lab.live import LiveStack  # noqa: E402

"""Interactive Beam and Beam's logs in a notebook kernel: static outputs instead of JavaScript
widgets, ``ib.collect`` frames made readable, stderr sent to a file.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from txpipe.contract import UTC


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


def stderr_to(path):
    """Send fd 2 — Beam's logs and the package build's chatter, from subprocesses too — to a
    file for the duration of a ``with`` block, as ``export-job`` does."""
    from txpipe.export import _stderr_to

    return _stderr_to(Path(path))


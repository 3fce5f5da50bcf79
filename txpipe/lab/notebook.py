"""What the notebooks import as ``nb`` (``from txpipe.lab import notebook as nb``): one
namespace over the lab's notebook helpers, which live by concern in
:mod:`txpipe.lab.frames` (the stream, recounts, tidy tables), :mod:`txpipe.lab.plots`
(pictures), :mod:`txpipe.lab.scenarios` (TestStream scenarios, :class:`Bucket`) and
:mod:`txpipe.lab.kernel` (Interactive Beam in a kernel). They draw and tidy; the Beam code the
notebooks teach stays in their cells.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from typing import Any

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
    plot_timeline,
    plot_window_kinds,
    plot_windows,
)
from txpipe.lab.scenarios import Bucket, Scenario, Step, pane_story, run_scenario

__all__ = [
    "NOTEBOOK_START", "STAT_COLUMNS", "Bucket", "LiveStack", "Scenario", "Step",
    "bad_examples", "compare_windows", "conservation", "data_watermark", "dead_letter_reasons",
    "decimals_as_text", "job_steps", "job_summary", "lateness", "messages_frame", "pane_story",
    "perfect_watermark", "plot_categories", "plot_graph", "plot_panes", "plot_stream",
    "plot_timeline", "plot_window_kinds", "plot_windows", "position_in_window", "recount",
    "run_scenario", "static_outputs", "stderr_to", "streaming_interactive_pipeline",
    "summary_table", "tidy_collect", "window_close_delay", "window_table",
]


# --- live, from the Pub/Sub emulator ---------------------------------------------------------


class LiveStack:
    """The Pub/Sub emulator for the live notebook, and the streaming jobs it runs.

    :meth:`connect` uses the emulator ``PUBSUB_EMULATOR_HOST`` names when it answers; else it
    starts one on a free port through :class:`txpipe.lab.local.PubSubEmulator` (stopped, by PID,
    in :meth:`stop`); when neither is possible, or ``TXPIPE_NOTEBOOK_EMULATOR=off`` is set,
    :attr:`available` is False and :attr:`status` says why, so the notebook's cells can skip
    cleanly. :meth:`run` starts a streaming job with
    the lab's local read (the watermark follows the data; the job drains instead of losing what
    it read), as ``python -m txpipe run`` and the demo do.
    """

    def __init__(self) -> None:
        self.emulator = None
        self.host: str | None = None
        self.status = ""
        self._previous_env: str | None = None
        self._publishers: list[threading.Thread] = []
        self._stop_publishing = threading.Event()
        self._runs: list = []

    @property
    def available(self) -> bool:
        return self.host is not None

    @classmethod
    def connect(cls) -> LiveStack:
        import os

        from txpipe.lab.local import EmulatorError, PubSubEmulator

        stack = cls()
        if os.environ.get("TXPIPE_NOTEBOOK_EMULATOR", "").lower() == "off":
            # How the notebooks are tested as a machine without Java or gcloud runs them.
            stack.status = "no Pub/Sub emulator: TXPIPE_NOTEBOOK_EMULATOR=off"
            return stack
        stack._previous_env = os.environ.get("PUBSUB_EMULATOR_HOST")
        host = stack._previous_env
        if host and _answers(host):
            stack.host = host
            stack.status = "using the running Pub/Sub emulator (PUBSUB_EMULATOR_HOST)"
            return stack
        try:
            stack.emulator = PubSubEmulator().start()
        except EmulatorError as exc:
            stack.status = f"no Pub/Sub emulator: {exc}"
            return stack
        # Started with a session of its own, it would outlive a kernel that dies mid-notebook.
        atexit.register(stack.stop)
        stack.host = stack.emulator.emulator_host
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.host
        stack.status = "started a Pub/Sub emulator for this notebook (stopped at the end)"
        return stack

    def resources(self, name: str, subscriptions: Sequence[str], **overrides: Any):
        """A topic of this run's own and one subscription per reader; returns their Settings
        (``overrides``: other settings, e.g. ``window_size_seconds``)."""
        import uuid

        from txpipe.config import load_settings
        from txpipe.resources import ensure_pubsub

        tag = uuid.uuid4().hex[:8]
        made = []
        for sub in subscriptions:
            settings = load_settings(
                env_file=None, pubsub_topic_id=f"{name}-{tag}",
                pubsub_subscription_id=f"{name}-{tag}-{sub}",
                pubsub_dead_letter_topic_id=f"{name}-{tag}-dead", **overrides)
            ensure_pubsub(settings, emulator_host=self.host)
            made.append(settings)
        return made

    def publish_in_background(self, cfg, topic_path: str) -> dict:
        """Publish ``cfg``'s stream (paced, stamped now) from a thread; the returned dict gets
        ``stats`` (simulator PublishStats) and ``truth`` (its ground truth) when it is done."""
        from simulator import TruthBuilder, publish

        outcome: dict[str, Any] = {}
        truth = TruthBuilder(cfg.window_size)

        def work() -> None:
            outcome["stats"] = publish(cfg, topic_path, stop_event=self._stop_publishing,
                                       truth=truth, paced=True)
            outcome["truth"] = truth.build(outcome["stats"].config or cfg)

        thread = threading.Thread(target=work, name="publisher", daemon=True)
        thread.start()
        self._publishers.append(thread)
        outcome["thread"] = thread
        return outcome

    def local(self):
        """The lab's local-runner adaptation: ``local().dedupe(horizon)`` is the job's Dedupe."""
        from txpipe.lab.direct_pubsub import LocalStreaming

        return LocalStreaming()

    def run(self, pipeline, settings=None):
        """Start a streaming ``pipeline`` on the DirectRunner with the local read; returns its
        :class:`txpipe.lab.direct_pubsub.LocalRun`: ``finish()`` when the publisher is done
        (read what is left, drain, wait), ``drain()`` / ``cancel()`` otherwise. ``settings``
        (the job's Settings) lets it count what arrived too late."""
        from txpipe.windowing import WindowSpec

        handle = self.local().run(pipeline, WindowSpec.from_settings(settings)
                                  if settings is not None else None)
        self._runs.append(handle)
        return handle

    def stop(self) -> str:
        import os

        self._stop_publishing.set()
        for thread in self._publishers:
            thread.join(timeout=30)
        for handle in self._runs:  # a job still running drains: what it read gets written
            if not handle.done:
                handle.drain()
                if not handle.wait(60):
                    handle.cancel()
        self._runs.clear()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
            if self._previous_env is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = self._previous_env
            return "stopped the emulator this notebook started"
        return "nothing to stop" if not self.available else "left the running emulator alone"


def _answers(host: str) -> bool:
    from txpipe.lab.local import _http_answers

    return _http_answers(f"http://{host}/")


def streaming_interactive_pipeline():
    """An InteractiveRunner pipeline in streaming mode, for unbounded sources (Pub/Sub)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(InteractiveRunner(), options=options)

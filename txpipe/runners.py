"""Running a pipeline: its Beam options, the runner named for a local run, — on a local
runner, when the lab is installed — the lab's adaptations, and :func:`execute`, which builds
and runs a ``run``'s graph until it ends, drains or is cancelled.

A local run names the runner Beam's DirectRunner would switch to (the FnApiRunner for a
bounded read, the BundleBasedDirectRunner for Pub/Sub), which skips the DirectRunner's probe
for IPython and its attempt at Prism (a download that fails offline); the lab hands the
FnApiRunner its options as the DirectRunner does (Beam's internals, kept out of the runtime).

Beam's DirectRunner reads Pub/Sub ten messages per bundle with a wall-clock watermark and has no
drain: not fit for local streaming. The lab (``pip install txpipe[lab]``) brings a better local
read, a dedupe without per-id timers and a drain, and the wiring of Beam's BigQuery clients to
a local BigQuery. The runtime — what Dataflow workers install — finds them with the one guarded
import of :func:`_lab` and runs Beam as it is without them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

from txpipe import dataflow
from txpipe.config import setting_flags
from txpipe.pipeline import build_pipeline
from txpipe.windowing import WindowSpec

if TYPE_CHECKING:
    from txpipe.config import Settings

log = logging.getLogger("txpipe.runners")

#: What ``--runner`` says for a run in this process: unset, or one of Beam's local runners.
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner")


class TxpipeOptions(PipelineOptions):
    """txpipe's settings as Beam pipeline options (``options.view_as(TxpipeOptions)``), so a
    job's options — on the Dataflow console, in an exported template — show what it was built
    with (:func:`record_settings`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for flag in setting_flags():
            if not flag.beam:  # --project / --region: Beam's own options already
                parser.add_argument(f"--{flag.beam_name}", dest=flag.field, default=None,
                                    help=flag.help)


def record_settings(options: PipelineOptions, settings: Settings) -> None:
    """Write the effective settings into ``options`` (in place)."""
    view = options.view_as(TxpipeOptions)
    for flag in setting_flags():
        if not flag.beam:
            value = getattr(settings, flag.field)
            setattr(view, flag.field, value.value if isinstance(value, enum.Enum) else value)


def pipeline_options(run: Any) -> PipelineOptions:
    """The Beam options of ``run`` (a txpipe.cli.RunPlan): its Beam flags, its settings,
    Dataflow's defaults."""
    options = PipelineOptions(run.beam_args)
    record_settings(options, run.settings)
    standard = options.view_as(StandardOptions)
    standard.streaming = run.streaming
    if standard.runner in LOCAL_RUNNERS:
        standard.runner = local_runner_name(run.source.streaming)
    gcp = options.view_as(GoogleCloudOptions)
    gcp.project = gcp.project or run.settings.project_id
    gcp.region = gcp.region or run.settings.region
    if dataflow.is_dataflow(standard.runner):  # worker code, Streaming Engine, seed's workers
        dataflow.apply_defaults(options, run.streaming)
    # Workers import txpipe as a package; nothing from __main__ needs pickling.
    options.view_as(SetupOptions).save_main_session = False
    return options


def local_runner_name(reads_pubsub: bool) -> str:
    """The runner Beam's DirectRunner switches to for this graph: txpipe's graphs have no
    timers and no side inputs, so only a Pub/Sub read keeps it off the FnApiRunner."""
    return "BundleBasedDirectRunner" if reads_pubsub else "FnApiRunner"


def runner_for(options: PipelineOptions):
    """The runner object for ``options`` — for the FnApiRunner, the lab's, which hands it the
    pipeline options as the DirectRunner does — or None: Beam builds it from the name."""
    if options.view_as(StandardOptions).runner != "FnApiRunner":
        return None
    build = _lab("fn_api_runner")
    return build(options) if build is not None else None


@contextlib.contextmanager
def outside_ipython():
    """Beam asks IPython whether it runs in a notebook at every transform applied and at run,
    importing IPython for that (0.6 s in the lab's environment). IPython not imported yet means
    not running in it: inside, the question is answered no without the import."""
    if "IPython" in sys.modules:
        yield
        return
    sys.modules["IPython"] = None  # type: ignore[assignment]  # an import of it fails at once
    try:
        yield
    finally:
        if "IPython" in sys.modules and sys.modules["IPython"] is None:
            del sys.modules["IPython"]


def _lab(name: str) -> Any:
    """One of the lab's adaptations by name (txpipe.lab.adaptation), or None without the lab,
    as on a Dataflow worker."""
    try:
        from txpipe.lab import adaptation

        return adaptation(name)
    except ImportError as exc:  # the runtime alone
        log.debug("lab not installed: %s", exc)
        return None


def local_streaming(runner: str | None, settings: Settings):
    """The lab's local-streaming adaptation for a streaming run on ``runner``, if any."""
    adapter = _lab("LocalStreaming") if runner in LOCAL_RUNNERS else None
    if adapter is None:
        return None
    return adapter(band_seconds=settings.local_estimation_band_seconds)


def local_bigquery(writes_bigquery: bool, runner: str | None) -> contextlib.AbstractContextManager:
    """A context in which a local run writes BigQuery rows to the BigQuery that
    ``BIGQUERY_EMULATOR_HOST`` names (the lab's wiring); a no-op otherwise."""
    wiring = _lab("LocalBigQuery") if writes_bigquery and runner in LOCAL_RUNNERS else None
    wiring = wiring() if wiring is not None else None
    return wiring.installed() if wiring and wiring.applies() else contextlib.nullcontext()


class StopSignals:
    """Counts SIGINT (Ctrl+C) and SIGTERM while a run waits: callers drain on the first and
    cancel on the second. With ``interrupt=True`` a signal raises KeyboardInterrupt instead, for
    runs that cannot drain. Handlers are installed only in the main thread (elsewhere nothing
    is counted) and restored on exit."""

    def __init__(self, interrupt: bool = False):
        self.interrupt = interrupt
        self.count = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.interrupt:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# --- running it -----------------------------------------------------------------------------

@dataclass
class RunOutcome:
    """How a run ended: ``done`` (finished by itself), ``drained`` (Ctrl+C or SIGTERM on a
    local streaming run), ``cancelled`` (a second signal) or ``interrupted`` (a signal on a run
    that cannot drain). ``result`` is None when the runner was stopped before it returned one."""

    result: Any
    ended: str = "done"
    note: str | None = None  # what a cancel left unwritten
    source: dict[str, int] = field(default_factory=dict)  # the local read's own counts


def execute(run: Any, options: PipelineOptions | None = None) -> RunOutcome:
    """Build and run the pipeline of ``run`` (a txpipe.cli.RunPlan) until it finishes, is
    drained or cancelled (Ctrl+C, SIGTERM); ``options``: its Beam options (default:
    :func:`pipeline_options`)."""
    options = options or pipeline_options(run)
    runner = options.view_as(StandardOptions).runner
    adapter = local_streaming(runner, run.settings) if run.streaming else None
    with outside_ipython():
        pipeline = beam.Pipeline(runner=runner_for(options), options=options)
        build_pipeline(pipeline, run.settings, run.source, run.sink, breakdown=run.breakdown,
                       dead_letter_topic=run.dead_letter_topic, route=run.route,
                       dedupe=adapter.dedupe(run.settings.dedupe_horizon_seconds)
                       if adapter else None)
        if run.streaming and dataflow.is_dataflow(runner):
            return RunOutcome(pipeline.run())  # runs until drained; waiting: cancel on Ctrl-C
        with local_bigquery(run.sink_name == "bigquery", runner):
            if adapter is not None:
                warehouse = run.sink.path if run.sink_name == "duckdb" else None
                return _run_local(adapter, pipeline, WindowSpec.from_settings(run.settings),
                                  warehouse)
            return _run_batch(pipeline)


def _run_batch(pipeline) -> RunOutcome:
    """Run a bounded pipeline (or a stream on a runner that is not local) to its end."""
    result = None
    try:
        with StopSignals(interrupt=True):
            result = pipeline.run()  # a batch run on the default runner returns when done
            result.wait_until_finish()
    except KeyboardInterrupt:
        if result is not None:
            log.warning("interrupted: cancelling the pipeline")
            result.cancel()
        return RunOutcome(result, "interrupted")
    return RunOutcome(result)


def _run_local(adapter, pipeline, windows, warehouse: str | None = None) -> RunOutcome:
    """Run a local streaming pipeline: the first Ctrl+C / SIGTERM drains it, a second cancels.
    Into a DuckDB ``warehouse`` its progress is recorded beside it, for the dashboard."""
    handle = adapter.run(pipeline, windows)
    recorder = adapter.record_progress(handle, warehouse) if warehouse else None
    try:
        ended, note = handle.until_stopped(
            lambda text: print(f"txpipe run: {text}", file=sys.stderr, flush=True))
    finally:
        if recorder is not None:
            recorder.stop()
    return RunOutcome(handle.result, ended, note, handle.source_counters())

"""``python -m txpipe run``: streaming from Pub/Sub (the default, as in production) or a replay
of files, into BigQuery, DuckDB or JSON Lines. Flags the CLI does not know go to Beam
(``--runner``, ``--direct_num_workers`` ...); a flag Beam does not know either is an error.

Every input or set-up mistake ends as one line on stderr and exit status 2 — the sink
included: the warehouse is opened (or the BigQuery dataset checked) before any data is read.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from txpipe.errors import OneLineParser, UsageError

if TYPE_CHECKING:
    from txpipe.config import Route, Settings
    from txpipe.sinks import Sink
    from txpipe.sources import Source

log = logging.getLogger("txpipe.run")

__all__ = ["UsageError", "build_parser", "execute", "main", "pipeline_options", "plan"]

SOURCES = ("pubsub", "file")
SINKS = ("bigquery", "duckdb", "jsonl")


def _flag(group, name: str, **kwargs) -> None:
    """A flag in its dashed spelling and, for Flex Templates, its underscored one."""
    spellings = [f"--{name}"]
    if "-" in name:
        spellings.append(f"--{name.replace('-', '_')}")
    group.add_argument(*spellings, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from txpipe.options import add_setting_arguments

    p = OneLineParser(prog="python -m txpipe run", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    _flag(io, "source", choices=SOURCES, default="pubsub",
          help="pubsub: stream from PUBSUB_SUBSCRIPTION_ID (default); file: replay --input")
    _flag(io, "input", help="file source: path or glob of files, one message per line")
    _flag(io, "subscription", help="pubsub source: projects/P/subscriptions/S "
          "(default from PROJECT_ID / PUBSUB_SUBSCRIPTION_ID)")
    _flag(io, "sink", choices=SINKS, default="bigquery",
          help="bigquery (default; BIGQUERY_DATASET_ID.BIGQUERY_TABLE_ID), duckdb, jsonl")
    _flag(io, "output", help="jsonl: file name prefix; duckdb: database file "
          "(default WAREHOUSE_PATH)")
    _flag(io, "dead-letter-output", help="jsonl: prefix of the dead-letter files "
          "(default OUTPUT-dead-letters)")
    _flag(io, "anomaly-output", help="jsonl: prefix of the anomaly files (with --anomalies; "
          "default OUTPUT-anomalies)")
    _flag(io, "dead-letter-topic", help="also publish dead letters to this Pub/Sub topic "
          "(projects/P/topics/T; streaming only)")
    _flag(io, "breakdown", metavar="FIELD",
          help="also aggregate per value of FIELD (e.g. category, country)")
    # Every setting that is a flag, from the settings model itself (txpipe.options).
    add_setting_arguments(p.add_argument_group("settings (override the environment and .env)"))
    return p


@dataclass
class RunPlan:
    """What a ``run`` invocation resolved to, validated before any pipeline is built."""

    settings: Settings
    source: Source
    sink: Sink
    beam_args: list[str]
    streaming: bool
    breakdown: str | None
    dead_letter_topic: str | None
    route: Route = None  # type: ignore[assignment]  # set by plan()
    route_reason: str = ""


def _writable_prefix(prefix: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{what} {prefix!r} is not writable: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {prefix!r} is not writable: no write permission on {directory}")
    if os.path.isdir(prefix):
        raise UsageError(f"{what} {prefix!r} is a directory; give a file name prefix")


def _check_beam_args(beam_args: list[str]) -> None:
    import contextlib
    import io

    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args)
    quiet = logging.getLogger("apache_beam.options.pipeline_options")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # Beam would warn and go on; we refuse in one line instead
    printed = io.StringIO()  # Beam's parser prints its whole usage for a bad value, then exits
    try:
        with contextlib.redirect_stderr(printed):
            known = options.get_all_options()
            everything = options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        last = (printed.getvalue().strip().splitlines() or ["invalid Beam option"])[-1]
        raise UsageError(last.split("error: ", 1)[-1]) from None
    finally:
        quiet.setLevel(level)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        typed = [a.split("=", 1)[0] for a in beam_args
                 if a.startswith("-") and a.lstrip("-").split("=", 1)[0].replace("-", "_")
                 == unknown[0]]
        raise UsageError(f"unrecognized arguments: {typed[0] if typed else '--' + unknown[0]}")
    positional = [a for a in beam_args if not a.startswith("-")]
    if positional and not any(a.startswith("--") for a in beam_args):
        raise UsageError(f"unrecognized arguments: {' '.join(beam_args)}")
    runner = options.view_as(StandardOptions).runner
    if runner:
        from apache_beam.runners.runner import create_runner

        try:
            create_runner(runner)
        except (ValueError, ImportError) as exc:
            raise UsageError(f"--runner {runner!r}: {str(exc).split('. ')[0]}") from None


def plan(argv: list[str]) -> RunPlan:
    from txpipe.config import ConfigError, load_settings
    from txpipe.options import setting_overrides

    args, beam_args = build_parser().parse_known_args(argv)
    overrides = setting_overrides(args)
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    _check_beam_args(beam_args)

    from txpipe.aggregate import AggregateByDimension

    if args.breakdown:
        try:
            AggregateByDimension(args.breakdown)
        except ValueError as exc:
            raise UsageError(f"--breakdown: {exc}") from None

    from txpipe.sources import FileSource, PubSubSource

    if args.source == "file":
        if not args.input:
            raise UsageError("--source file needs --input PATH_OR_GLOB")
        if "://" not in args.input and not glob.glob(os.path.expanduser(args.input)):
            raise UsageError(f"--input {args.input!r} matches no file")
        source = FileSource(os.path.expanduser(args.input))
        streaming = "--streaming" in beam_args
    else:
        if args.input:
            raise UsageError("--input is for --source file")
        from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

        from txpipe.contract import ATTR_TRANSACTION_ID
        from txpipe.dataflow import is_dataflow

        runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
        source = PubSubSource(args.subscription or settings.subscription_path,
                              timestamp_attribute=settings.pubsub_timestamp_attribute or None,
                              id_label=ATTR_TRANSACTION_ID if is_dataflow(runner) else None)
        streaming = True
    if args.dead_letter_topic and not streaming:
        raise UsageError("--dead-letter-topic needs a streaming run (--source pubsub)")
    if settings.pubsub_alert_topic_id and not settings.anomalies:
        raise UsageError("--alert-topic publishes anomalies: add --anomalies")
    if settings.pubsub_alert_topic_id and not streaming:
        raise UsageError("--alert-topic needs a streaming run (--source pubsub)")
    if args.anomaly_output and not (settings.anomalies and args.sink == "jsonl"):
        raise UsageError("--anomaly-output is for --sink jsonl with --anomalies")
    settings = _with_run_id(settings, source, args.breakdown, beam_args)

    from txpipe.sinks import BigQuerySink, DuckDBSink, JsonlSink

    if args.sink == "jsonl":
        if not args.output:
            raise UsageError("--sink jsonl needs --output PREFIX")
        dead = args.dead_letter_output or f"{args.output}-dead-letters"
        _writable_prefix(args.output, "--output")
        _writable_prefix(dead, "--dead-letter-output")
        anomaly_output = args.anomaly_output or f"{args.output}-anomalies"
        if settings.anomalies:
            _writable_prefix(anomaly_output, "--anomaly-output")
        sink = JsonlSink(args.output, dead, f"{args.output}-by-{args.breakdown}"
                         if args.breakdown else None, streaming=streaming,
                         anomaly_output=anomaly_output)
    elif args.sink == "duckdb":
        path = args.output or settings.warehouse_path
        _writable_prefix(path, "--output")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise UsageError(f"--output {path!r} is not writable")
        sink = DuckDBSink(path, settings.bigquery_table_id, settings.bigquery_dead_letter_table_id,
                          settings.bigquery_anomaly_table_id)
    else:
        if args.output or args.dead_letter_output:
            raise UsageError("--sink bigquery takes its tables from BIGQUERY_DATASET_ID / "
                             "BIGQUERY_TABLE_ID (or --bigquery-dataset / --bigquery-table), "
                             "not --output")
        sink = BigQuerySink.from_settings(settings)
        _check_bigquery_method(settings, streaming)
    from txpipe.pipeline import choose_route

    try:
        route, why = choose_route(settings, source, args.breakdown)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return RunPlan(settings, source, sink, beam_args, streaming, args.breakdown,
                   args.dead_letter_topic, route, why)


def _with_run_id(settings: Settings, source: Source, breakdown: str | None,
                 beam_args: list[str]) -> Settings:
    """The settings with the run's id settled (recorded in the job's options, stamped on its
    rows): given, derived from a replay's input, or drawn for a stream (txpipe.sinks.identity).
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    if PipelineOptions(beam_args).view_as(GoogleCloudOptions).update and not settings.run_id:
        raise UsageError("--update keeps the running job's state, so its rows must keep its "
                         "run id: add --run-id (the job's run_id pipeline option)")
    from txpipe.sinks import RunIdentity

    run_id = RunIdentity.for_run(settings, source, breakdown).run_id
    return settings.model_copy(update={"run_id": run_id})


def _check_bigquery_method(settings: Settings, streaming: bool) -> None:
    from txpipe.config import BigQueryMethod
    from txpipe.sinks.bigquery import resolve_method, storage_write_unavailable

    if resolve_method(settings.bigquery_method, streaming) is BigQueryMethod.STORAGE_WRITE:
        reason = storage_write_unavailable()
        if reason:
            raise UsageError(f"--bigquery-method storage_write: {reason}; use "
                             "streaming_inserts or file_loads")


def check_sink(run: RunPlan) -> None:
    """Open what the run writes to, as its writers will, before any data is read: a DuckDB
    file that is no database or stays locked, a BigQuery dataset that is missing or not
    writable, become one line (UsageError). Creates missing tables and views."""
    from txpipe.sinks import BigQuerySink, DuckDBSink

    if isinstance(run.sink, DuckDBSink):
        from txpipe.sinks.duckdb import WarehouseError

        try:
            run.sink.check(dimensions=bool(run.breakdown), anomalies=run.settings.anomalies,
                           wait_seconds=run.settings.warehouse_lock_wait_seconds,
                           progress=lambda line: print(f"txpipe run: {line}", file=sys.stderr,
                                                       flush=True))
        except WarehouseError as exc:
            raise UsageError(f"--output {exc}") from None
    elif isinstance(run.sink, BigQuerySink):
        from txpipe.resources import ResourceError, check_bigquery

        try:
            check_bigquery(run.settings, dimension_table=bool(run.breakdown),
                           anomaly_table=run.settings.anomalies)
        except ResourceError as exc:
            raise UsageError(str(exc)) from None
        _file_loads_location(run)


def _file_loads_location(run: RunPlan) -> None:
    """File loads stage rows under the temp location, which BigQuery reads: gs:// for Google
    Cloud; a local directory (made here if none is given) for a local BigQuery."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from txpipe.config import BigQueryMethod
    from txpipe.sinks.bigquery import resolve_method

    if resolve_method(run.settings.bigquery_method, run.streaming) is not BigQueryMethod.FILE_LOADS:
        return
    temp = pipeline_options(run).view_as(GoogleCloudOptions).temp_location
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        if not temp:
            import tempfile

            run.beam_args.append(f"--temp_location={tempfile.mkdtemp(prefix='txpipe-loads-')}")
        return
    if not (temp or "").startswith("gs://"):
        raise UsageError("--bigquery-method file_loads stages rows for BigQuery to load: give "
                         "--temp_location gs://BUCKET/tmp (or choose streaming_inserts)")


def pipeline_options(run: RunPlan):
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        SetupOptions,
        StandardOptions,
    )

    options = PipelineOptions(run.beam_args)
    from txpipe.options import record_settings

    record_settings(options, run.settings)  # the job shows what it was built with
    standard = options.view_as(StandardOptions)
    standard.streaming = run.streaming
    standard.runner = standard.runner or "DirectRunner"
    gcp = options.view_as(GoogleCloudOptions)
    gcp.project = gcp.project or run.settings.project_id
    gcp.region = gcp.region or run.settings.region
    from txpipe import dataflow

    if dataflow.is_dataflow(standard.runner):  # worker code, Streaming Engine, seed's workers
        dataflow.apply_defaults(options, run.streaming)
    # Workers import txpipe as a package; nothing from __main__ needs pickling.
    options.view_as(SetupOptions).save_main_session = False
    return options


@dataclass
class Outcome:
    """How a run ended: ``done`` (finished by itself), ``drained`` (Ctrl+C or SIGTERM on a
    local streaming run), ``cancelled`` (a second signal) or ``interrupted`` (a signal on a run
    that cannot drain). ``result`` is None when the runner was stopped before it returned one."""

    result: Any
    ended: str = "done"
    note: str | None = None  # what a cancel left unwritten
    source: dict[str, int] = field(default_factory=dict)  # the local read's own counts


def execute(run: RunPlan) -> Outcome:
    """Build and run the pipeline until it finishes, is drained or cancelled (Ctrl+C, SIGTERM)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from txpipe import runners
    from txpipe.dataflow import is_dataflow
    from txpipe.pipeline import build_pipeline
    from txpipe.sinks.bigquery import local_wiring

    options = pipeline_options(run)
    runner = options.view_as(StandardOptions).runner
    adapter = runners.for_run(runner, run.source) if run.streaming else None
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, run.settings, run.source, run.sink, breakdown=run.breakdown,
                   dead_letter_topic=run.dead_letter_topic,
                   dedupe=adapter.dedupe(run.settings.dedupe_horizon_seconds) if adapter else None,
                   route=run.route)
    if run.streaming and is_dataflow(runner):
        return Outcome(pipeline.run())  # runs until drained; waiting here would cancel it on Ctrl-C
    with local_wiring(run.sink, runner):
        if adapter is not None:
            from txpipe.windowing import WindowSpec

            return _run_local(adapter, pipeline, WindowSpec.from_settings(run.settings))
        return _run_batch(pipeline)


def _run_batch(pipeline) -> Outcome:
    """Run a bounded pipeline (or a stream on a runner that is not local) to its end."""
    from txpipe import runners

    result = None
    try:
        with runners.StopSignals(interrupt=True):
            result = pipeline.run()  # a batch run on the default runner returns when done
            result.wait_until_finish()
    except KeyboardInterrupt:
        if result is not None:
            log.warning("interrupted: cancelling the pipeline")
            result.cancel()
        return Outcome(result, "interrupted")
    return Outcome(result)


def _run_local(adapter, pipeline, windows) -> Outcome:
    """Run a local streaming pipeline: the first Ctrl+C / SIGTERM drains it, a second cancels."""
    handle = adapter.run(pipeline, windows)
    ended, note = handle.until_stopped(
        lambda text: print(f"txpipe run: {text}", file=sys.stderr, flush=True))
    return Outcome(handle.result, ended, note, handle.source_counters())


def summary(counters: dict[str, int], source: dict[str, int] | None = None) -> str:
    from txpipe import metrics
    from txpipe.contract import Reason

    parts = [f"{name}={n}" for name, n in (source or {}).items() if n or name == "pulled"]
    parts += [f"read={counters.get(metrics.READ, 0)}",
              f"valid={counters.get(metrics.VALID, 0)}",
              f"unique={counters.get(metrics.UNIQUE, 0)}",
              f"duplicates_dropped={counters.get(metrics.DUPLICATES_DROPPED, 0)}",
              f"dead_lettered={counters.get(metrics.DEAD_LETTERED, 0)}"]
    parts += [f"{r.value}={counters[metrics.dead_letter_counter(r)]}" for r in Reason
              if counters.get(metrics.dead_letter_counter(r))]
    parts.append(f"panes={counters.get(metrics.PANES, 0)}")
    parts += [f"{name}={counters[name]}" for name in
              (metrics.BIGQUERY_REJECTED, metrics.DEAD_LETTERS_UNWRITTEN) if counters.get(name)]
    if metrics.ANOMALIES in counters:
        parts.append(f"anomalies={counters[metrics.ANOMALIES]}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    try:
        run = plan(argv)
        from txpipe.dataflow import check_submission

        check_submission(pipeline_options(run))
        check_sink(run)
    except UsageError as exc:
        print(f"txpipe run: error: {exc}", file=sys.stderr)
        return 2
    from txpipe import logs
    from txpipe.metrics import read_counters
    from txpipe.windowing import WindowSpec

    logs.configure(run.settings.log_level.value)
    log.info("starting: %s from %s into %s; %s route (%s); run id %s",
             WindowSpec.from_settings(run.settings).describe(), type(run.source).__name__,
             type(run.sink).__name__, run.route.value, run.route_reason, run.settings.run_id)
    if run.settings.anomalies:
        from txpipe.anomaly import AnomalySpec

        log.info("anomaly detection: %s", AnomalySpec.from_settings(run.settings).describe())
    try:
        outcome = execute(run)
    except KeyboardInterrupt:  # before the pipeline started
        print("txpipe run: interrupted before the pipeline started", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed job: say why in one line; the log has the details
        log.debug("pipeline failed", exc_info=True)
        print(f"txpipe run: pipeline failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
              if str(exc) else f"txpipe run: pipeline failed: {type(exc).__name__}",
              file=sys.stderr)
        return 1
    from txpipe.dataflow import submission_line

    result = outcome.result
    line = submission_line(result) if result is not None else None
    if line:
        print(line)
        return 0
    counters = read_counters(result) if result is not None else None
    route = f"route={run.route.value}"
    if outcome.ended == "cancelled":
        print(f"{summary(counters or {}, outcome.source)} {route}  (counted before the cancel)")
        print(f"txpipe run: {outcome.note}", file=sys.stderr)
        return 130
    if outcome.ended == "interrupted":
        if counters is None:
            print("txpipe run: interrupted before the runner returned: no counters (a batch "
                  "run reports them when it completes)", file=sys.stderr)
        else:
            print(f"{summary(counters, outcome.source)} {route}  (counted before the "
                  "interruption)")
        return 130
    if outcome.ended == "drained":
        print("txpipe run: drained: every window of what was read is written", file=sys.stderr)
    print(f"{summary(counters, outcome.source)} {route}")
    return 0

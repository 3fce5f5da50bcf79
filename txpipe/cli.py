"""``python -m txpipe run``: streaming from Pub/Sub (the default, as in production) or a replay
of files, into BigQuery, DuckDB or JSON Lines. Flags the CLI does not know go to Beam
(``--runner``, ``--direct_num_workers`` ...); a flag Beam does not know either is an error.

Every input or set-up mistake ends as one line on stderr and exit status 2 — the sink
included: the warehouse is opened (or the BigQuery dataset checked) before any data is read.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import io
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from txpipe import logs
from txpipe.config import (
    Route,
    Settings,
    add_setting_arguments,
    load_settings,
    setting_overrides,
)
from txpipe.contract import ATTR_TRANSACTION_ID, Reason
from txpipe.dataflow import check_submission, is_dataflow, submission_line
from txpipe.errors import OneLineParser, UsageError, command

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from txpipe.sinks import Sink
    from txpipe.sources import Source

# Beam and the modules built on it are imported inside the functions that build or check a
# pipeline, after the flags and settings are checked: `run --help` or a refused flag then
# answers in about 0.3 s of CPU instead of the 2.5 s `import apache_beam` takes
# (benchmarks/startup.py measures both).

log = logging.getLogger("txpipe.run")

__all__ = ["UsageError", "build_parser", "main", "parse", "plan"]

SOURCES = ("pubsub", "file")
SINKS = ("bigquery", "duckdb", "jsonl")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m txpipe run", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--source", choices=SOURCES, default="pubsub",
                    help="pubsub: stream from PUBSUB_SUBSCRIPTION_ID (default); file: replay "
                    "--input")
    io.add_argument("--input", help="file source: path or glob of files, one message per line")
    io.add_argument("--subscription", help="pubsub source: projects/P/subscriptions/S "
                    "(default from PROJECT_ID / PUBSUB_SUBSCRIPTION_ID)")
    io.add_argument("--sink", choices=SINKS, default="bigquery",
                    help="bigquery (default; BIGQUERY_DATASET_ID.BIGQUERY_TABLE_ID), duckdb, jsonl")
    io.add_argument("--output", help="jsonl: file name prefix; duckdb: database file "
                    "(default WAREHOUSE_PATH)")
    io.add_argument("--dead-letter-output", help="jsonl: prefix of the dead-letter files "
                    "(default OUTPUT-dead-letters)")
    io.add_argument("--anomaly-output", help="jsonl: prefix of the anomaly files (with "
                    "--anomalies; default OUTPUT-anomalies)")
    io.add_argument("--dead-letter-topic", help="also publish dead letters to this Pub/Sub "
                    "topic (projects/P/topics/T; streaming only)")
    io.add_argument("--breakdown", metavar="FIELD",
                    help="also aggregate per value of FIELD (e.g. category, country)")
    # Every setting that is a flag, from the settings model itself (txpipe.config).
    add_setting_arguments(p.add_argument_group("settings (override the environment and .env)"))
    return p


@dataclass
class RunPlan:
    """What a ``run`` invocation resolved to, validated before any pipeline is built."""

    settings: Settings
    source: Source
    sink: Sink
    sink_name: str  # --sink: bigquery, duckdb or jsonl
    beam_args: list[str]
    streaming: bool
    breakdown: str | None
    dead_letter_topic: str | None
    route: Route = None  # type: ignore[assignment]  # set by plan()
    route_reason: str = ""


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], Settings]:
    """The flags, the Beam options left over and the settings they make — checked without
    importing Beam."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    options = {o for action in parser._actions for o in action.option_strings}
    for arg in beam_args:  # one spelling: --window-size, never Beam's --window_size
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name.replace("_", "-") in options - {name}:
            raise UsageError(f"unrecognized arguments: {name} (the flag is "
                             f"{name.replace('_', '-')})")
    return args, beam_args, load_settings(**setting_overrides(args))


def plan(argv: list[str]) -> RunPlan:
    """Everything ``run`` needs, checked before anything is read: flags and settings, Beam's
    options, the source, the sink, the route."""
    args, beam_args, settings = parse(argv)
    # Beam, and what is built on it, is imported from here on: --help and a refused flag of
    # txpipe's own are answered without it (0.2 s, not 2 s).
    from txpipe.pipeline import choose_route

    options = _check_beam_args(beam_args)
    _check_breakdown(args.breakdown)
    source, streaming = _source(args, settings, options)
    _check_streaming_only(args, settings, streaming)
    settings = _with_run_id(settings, source, args.breakdown, options)
    sink = _sink(args, settings, streaming)
    try:
        route, why = choose_route(settings, source, args.breakdown)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return RunPlan(settings, source, sink, args.sink, beam_args, streaming, args.breakdown,
                   args.dead_letter_topic, route, why)


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


def _check_beam_args(beam_args: list[str]) -> PipelineOptions:
    """Beam's own options, checked: a bad value, an unknown flag or runner is one line too."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.runner import create_runner

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
        try:
            create_runner(runner)
        except (ValueError, ImportError) as exc:
            raise UsageError(f"--runner {runner!r}: {str(exc).split('. ')[0]}") from None
    return options


def _check_breakdown(breakdown: str | None) -> None:
    from txpipe.aggregate import AggregateByDimension

    if breakdown:
        try:
            AggregateByDimension(breakdown)
        except ValueError as exc:
            raise UsageError(f"--breakdown: {exc}") from None


def _source(args: argparse.Namespace, settings: Settings,
            options: PipelineOptions) -> tuple[Source, bool]:
    """The source, and whether the run streams."""
    from apache_beam.options.pipeline_options import StandardOptions

    from txpipe.sources import FileSource, PubSubSource

    if args.source == "file":
        if not args.input:
            raise UsageError("--source file needs --input PATH_OR_GLOB")
        if "://" not in args.input:
            matched = glob.glob(os.path.expanduser(args.input))
            if not matched:
                raise UsageError(f"--input {args.input!r} matches no file")
            folder = next((m for m in matched if os.path.isdir(m)), None)
            if folder is not None:
                raise UsageError(f"--input {args.input!r} matches the directory {folder!r}: give "
                                 f"a glob of files, e.g. {os.path.join(folder, '*.jsonl')!r}")
        return (FileSource(os.path.expanduser(args.input)),
                bool(options.view_as(StandardOptions).streaming))
    if args.input:
        raise UsageError("--input is for --source file")
    subscription = _pubsub_path("--subscription", args.subscription or settings.subscription_path,
                                "subscriptions")
    runner = options.view_as(StandardOptions).runner
    source = PubSubSource(subscription,
                          timestamp_attribute=settings.pubsub_timestamp_attribute or None,
                          id_label=ATTR_TRANSACTION_ID if is_dataflow(runner) else None)
    return source, True


def _pubsub_path(flag: str, path: str, kind: str) -> str:
    """A Pub/Sub resource path given on the command line, checked before Beam refuses it in
    the middle of building the pipeline."""
    if not re.fullmatch(rf"projects/[^/]+/{kind}/[^/]+", path):
        raise UsageError(f"{flag} {path!r} is not projects/PROJECT/{kind}/NAME")
    return path


def _check_streaming_only(args: argparse.Namespace, settings: Settings, streaming: bool) -> None:
    """Flags that need a stream, or another flag."""
    if args.dead_letter_topic and not streaming:
        raise UsageError("--dead-letter-topic needs a streaming run (--source pubsub)")
    if args.dead_letter_topic:
        _pubsub_path("--dead-letter-topic", args.dead_letter_topic, "topics")
    if settings.pubsub_alert_topic_id and not settings.anomalies:
        raise UsageError("--alert-topic publishes anomalies: add --anomalies")
    if settings.pubsub_alert_topic_id and not streaming:
        raise UsageError("--alert-topic needs a streaming run (--source pubsub)")
    if args.anomaly_output and not (settings.anomalies and args.sink == "jsonl"):
        raise UsageError("--anomaly-output is for --sink jsonl with --anomalies")


def _sink(args: argparse.Namespace, settings: Settings, streaming: bool) -> Sink:
    """The sink, its outputs checked writable (the BigQuery dataset is checked by
    :func:`check_sink`, which reaches the service)."""
    from txpipe import sinks

    if args.sink == "jsonl":
        if not args.output:
            raise UsageError("--sink jsonl needs --output PREFIX")
        dead = args.dead_letter_output or f"{args.output}-dead-letters"
        _writable_prefix(args.output, "--output")
        _writable_prefix(dead, "--dead-letter-output")
        anomaly_output = args.anomaly_output or f"{args.output}-anomalies"
        if settings.anomalies:
            _writable_prefix(anomaly_output, "--anomaly-output")
        return sinks.JsonlSink(args.output, dead, f"{args.output}-by-{args.breakdown}"
                         if args.breakdown else None, streaming=streaming,
                         anomaly_output=anomaly_output)
    if args.sink == "duckdb":
        path = args.output or settings.warehouse_path
        _writable_prefix(path, "--output")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise UsageError(f"--output {path!r} is not writable")
        return sinks.DuckDBSink.from_settings(path, settings)
    if args.output or args.dead_letter_output:
        raise UsageError("--sink bigquery takes its tables from BIGQUERY_DATASET_ID / "
                         "BIGQUERY_TABLE_ID (or --bigquery-dataset / --bigquery-table), "
                         "not --output")
    sink = sinks.BigQuerySink.from_settings(settings)
    try:
        sink.check_method(streaming)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return sink


def _with_run_id(settings: Settings, source: Source, breakdown: str | None,
                 options: PipelineOptions) -> Settings:
    """The settings with the run's id settled (recorded in the job's options, stamped on its
    rows): given, derived from a replay's input, or drawn for a stream (txpipe.sinks.identity).
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from txpipe.sinks import RunIdentity

    if options.view_as(GoogleCloudOptions).update and not settings.run_id:
        raise UsageError("--update keeps the running job's state, so its rows must keep its "
                         "run id: add --run-id (the job's run_id pipeline option)")

    run_id = RunIdentity.for_run(settings, source, breakdown).run_id
    return settings.model_copy(update={"run_id": run_id})


def check_sink(run: RunPlan) -> None:
    """Open what the run writes to, as its writers will, before any data is read: a DuckDB
    file that is no database or stays locked, a BigQuery dataset that is missing or not
    writable, become one line (UsageError). Creates missing tables and views."""
    if run.sink_name == "duckdb":
        from txpipe.sinks.duckdb import WarehouseError

        try:
            run.sink.check(dimensions=bool(run.breakdown), anomalies=run.settings.anomalies,
                           wait_seconds=run.settings.warehouse_lock_wait_seconds,
                           progress=lambda line: print(f"txpipe run: {line}", file=sys.stderr,
                                                       flush=True))
        except WarehouseError as exc:
            raise UsageError(f"--output {exc}") from None
    elif run.sink_name == "bigquery":
        from apache_beam.options.pipeline_options import GoogleCloudOptions

        from txpipe.runners import pipeline_options

        temp = pipeline_options(run).view_as(GoogleCloudOptions).temp_location
        try:
            staging = run.sink.check(run.settings, run.streaming, temp,
                                     dimensions=bool(run.breakdown),
                                     anomalies=run.settings.anomalies)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if staging != temp:
            run.beam_args.append(f"--temp_location={staging}")


def summary(counters: dict[str, int], source: dict[str, int] | None = None) -> str:
    from txpipe import metrics

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


@command("txpipe run")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    # Start-up (Beam's import above all) makes some 200,000 objects that live as long as the
    # run: the garbage collector, scanning them again and again, took a third of a second of a
    # short replay. So it waits until they are made, then they are frozen out of its sight
    # (in _main, before the graph is built); unfrozen at the end, for a caller that goes on.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()
        gc.unfreeze()


def _main(argv: list[str]) -> int:
    run = plan(argv)
    from txpipe import runners
    from txpipe.metrics import read_counters
    from txpipe.windowing import WindowSpec

    check_submission(runners.pipeline_options(run))
    check_sink(run)  # may add a local --temp_location to run.beam_args
    options = runners.pipeline_options(run)
    logs.configure(run.settings.log_level.value)
    log.info("starting: %s from %s into %s; %s route (%s); run id %s",
             WindowSpec.from_settings(run.settings).describe(), type(run.source).__name__,
             type(run.sink).__name__, run.route.value, run.route_reason, run.settings.run_id)
    if run.settings.anomalies:
        from txpipe.anomaly import AnomalySpec  # Beam's anomaly package: only when detecting

        log.info("anomaly detection: %s", AnomalySpec.from_settings(run.settings).describe())
    gc.freeze()  # start-up's objects, out of the collector's sight (main)
    gc.enable()
    try:
        outcome = runners.execute(run, options)
    except KeyboardInterrupt:  # before the pipeline started
        print("txpipe run: interrupted before the pipeline started", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed job: say why in one line; the log has the details
        log.debug("pipeline failed", exc_info=True)
        print(f"txpipe run: pipeline failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
              if str(exc) else f"txpipe run: pipeline failed: {type(exc).__name__}",
              file=sys.stderr)
        return 1
    result = outcome.result
    line = submission_line(result, options) if result is not None else None
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

"""``python -m txpipe export-job``: the job ``run --runner DataflowRunner`` would submit,
written offline.

The export builds the very graph ``run`` submits (:func:`txpipe.cli.plan` and
:func:`txpipe.pipeline.build_pipeline`) and has Beam's DataflowRunner write it as a template
to a local directory instead of sending it: with local temp / staging locations and
``--no_auth`` nothing reaches the network, so a job can be inspected and tested with no cloud
account, in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from txpipe.cli import plan
from txpipe.dataflow import is_dataflow
from txpipe.errors import OneLineParser, UsageError, command

# Beam is imported inside the functions that build the job, so `--help` and a refused flag
# answer without it (as for `run`, txpipe.cli).

TEMPLATE_FILE = "template.json"
PIPELINE_FILE = "pipeline.pb"
PACKAGE_FILE = "workflow.tar.gz"
DEPENDENCIES_FILE = "submission_environment_dependencies.txt"
LOG_FILE = "export.log"


@dataclass(frozen=True)
class ExportedJob:
    directory: Path
    job_type: str
    streaming_engine: bool
    transforms: int
    package: str | None
    seconds: float

    @property
    def template(self) -> Path:
        return self.directory / TEMPLATE_FILE

    @property
    def pipeline(self) -> Path:
        return self.directory / PIPELINE_FILE


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m txpipe export-job", allow_abbrev=False, add_help=False,
                usage="%(prog)s --output DIR [--streaming] [run flags] [Beam options]",
                description="Write the job `python -m txpipe run --runner DataflowRunner` would "
                "submit — template.json, pipeline.pb and the staged txpipe package — to a local "
                "directory, offline and without credentials. Every other flag is a `run` flag "
                "(see `python -m txpipe run --help`) or a Beam / Dataflow option.")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="directory for template.json, pipeline.pb and workflow.tar.gz")
    return p


_OWN_LOCATIONS = ("temp_location", "staging_location", "template_location")


def _refuse_remote(rest: list[str]) -> None:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    remote = next((a for a in rest if "gs://" in a), None)
    if remote:
        raise UsageError(f"export-job works offline and cannot use {remote!r}: give local "
                         "paths (a gs:// path needs the network)")
    gcp = PipelineOptions(rest).view_as(GoogleCloudOptions)
    if gcp.update:
        raise UsageError("--update looks up the running job on the service; export-job "
                         "works offline, so leave it out (names are in pipeline.pb)")
    for flag in _OWN_LOCATIONS:
        if getattr(gcp, flag):
            raise UsageError(f"--{flag} is chosen by export-job (inside --output); drop it")


def _runner_args(rest: list[str]) -> list[str]:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(rest).view_as(StandardOptions).runner
    if runner is None:
        return [*rest, "--runner", "DataflowRunner"]
    if not is_dataflow(runner):
        raise UsageError(f"export-job writes a Dataflow job; --runner {runner} is not Dataflow")
    return rest


def _prepare(directory: str) -> Path:
    out = Path(directory).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {directory!r} is a file; give a directory")
    try:
        (out / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output {directory!r} is not writable: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--output {directory!r} is not writable")
    for name in (TEMPLATE_FILE, PIPELINE_FILE, PACKAGE_FILE, DEPENDENCIES_FILE):  # no mixed runs
        (out / name).unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send fd 2 — Beam's logs and the sdist build's chatter — to a file for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def export_job(argv: list[str]) -> ExportedJob:
    """Build the ``run`` graph with Dataflow options and write it under ``--output``."""
    started = time.monotonic()
    args, rest = _parser().parse_known_args(argv)
    _refuse_remote(rest)

    run = plan(_runner_args(rest))
    out = _prepare(args.output)

    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.direct.direct_runner import DirectRunner

    from txpipe.pipeline import build_pipeline
    from txpipe.runners import pipeline_options

    options = pipeline_options(run)
    gcp = options.view_as(GoogleCloudOptions)
    gcp.temp_location = str(out / "tmp")
    gcp.staging_location = str(out)
    gcp.template_location = str(out / TEMPLATE_FILE)
    gcp.no_auth = True  # else ≈26 s of retries looking for credentials that are not needed
    # The DirectRunner only validates the options here; it never runs the graph. (The
    # DataflowRunner's own validation would insist on gs:// locations.)
    pipeline = beam.Pipeline(runner=DirectRunner(), options=options)
    build_pipeline(pipeline, run.settings, run.source, run.sink, breakdown=run.breakdown,
                   dead_letter_topic=run.dead_letter_topic, route=run.route)
    with _stderr_to(out / LOG_FILE):
        try:
            DataflowRunner().run_pipeline(pipeline, options)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UsageError(f"could not write the job: {type(exc).__name__}: {first} "
                             f"(details in {out / LOG_FILE})") from None
    return describe(out, time.monotonic() - started)


def describe(out: Path, seconds: float = 0.0) -> ExportedJob:
    """Read back what an export wrote."""
    from apache_beam.portability.api import beam_runner_api_pb2

    job = json.loads((out / TEMPLATE_FILE).read_text())
    environment = job.get("environment", {})
    graph = beam_runner_api_pb2.Pipeline()
    graph.ParseFromString((out / PIPELINE_FILE).read_bytes())
    packages = [p["name"] for pool in environment.get("workerPools", [])
                for p in pool.get("packages", [])]
    return ExportedJob(
        directory=out,
        job_type=job.get("type", ""),
        streaming_engine="enable_streaming_engine" in environment.get("experiments", []),
        transforms=len(graph.components.transforms),
        package=PACKAGE_FILE if PACKAGE_FILE in packages else None,
        seconds=seconds,
    )


@command("txpipe export-job")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        _parser().print_help()
        return 0
    job = export_job(argv)
    shipped = (f"txpipe staged as {job.directory / job.package}" if job.package
               else "code from the SDK container image")
    print(f"wrote {job.template} and {job.pipeline}: {job.job_type}, Streaming Engine "
          f"{'on' if job.streaming_engine else 'off'}, {job.transforms} transforms, {shipped} "
          f"({job.seconds:.1f} s)")
    return 0


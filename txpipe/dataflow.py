"""Dataflow: the defaults ``run --runner DataflowRunner`` applies, the checks that refuse a
submission doomed to fail, and what ``run`` says once the service has the job. The offline
export and the Flex Template entry point build on these (:mod:`txpipe.export`,
:mod:`txpipe.flex_template`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from txpipe.config import Settings
from txpipe.errors import UsageError

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineResult

#: The seed system's production shape; each is a default, any flag given wins.
RECOMMENDED_WORKERS = {
    "num_workers": 2,
    "max_num_workers": 10,
    "autoscaling_algorithm": "THROUGHPUT_BASED",
    "machine_type": "n1-standard-2",
}
#: Streaming jobs get a stable name: ``--update`` finds the running job by it, and Dataflow
#: refuses a second active job of the same name instead of double-writing the table.
STREAMING_JOB_NAME = "txpipe"

_GCS_PATH = re.compile(r"^gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9](/.*)?$")
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_dataflow(runner: str | None) -> bool:
    """``DataflowRunner``, ``dataflow`` or a dotted path to the class."""
    name = (runner or "").rsplit(".", 1)[-1].lower()
    return name in ("dataflow", "dataflowrunner")


def package_setup_file() -> str | None:
    """The setup.py shim beside the txpipe package (a source checkout or an editable install)."""
    candidate = Path(__file__).resolve().parent.parent / "setup.py"
    return str(candidate) if candidate.is_file() else None


def local_project() -> str:
    return Settings.model_fields["project_id"].default


def apply_defaults(options: PipelineOptions, streaming: bool) -> None:
    """Fill what a Dataflow job needs and the user did not say (in place)."""
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        SetupOptions,
        WorkerOptions,
    )

    workers = options.view_as(WorkerOptions)
    for name, value in RECOMMENDED_WORKERS.items():
        if getattr(workers, name) is None:
            setattr(workers, name, value)
    gcp = options.view_as(GoogleCloudOptions)
    if streaming:
        # Beam turns it on for every streaming job anyway; saying so keeps the job honest.
        gcp.enable_streaming_engine = True
        gcp.job_name = gcp.job_name or STREAMING_JOB_NAME
    setup = options.view_as(SetupOptions)
    ships_code = setup.setup_file or setup.extra_packages or workers.sdk_container_image
    if not ships_code:
        # Without it workers start with a bare Beam container and fail on `import txpipe`.
        setup.setup_file = package_setup_file()


def check_submission(options: PipelineOptions) -> None:
    """Refuse, in one line, what would fail only after minutes of staging on the service."""
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    if not is_dataflow(options.view_as(StandardOptions).runner):
        return
    gcp = options.view_as(GoogleCloudOptions)
    if gcp.project == local_project():
        raise UsageError(f"DataflowRunner needs your Google Cloud project: set PROJECT_ID or "
                         f"--project ({local_project()!r} is the offline default)")
    # The Flex Template launcher asks for a template in its own staging bucket; Beam then
    # finds (or creates) a default bucket for temp files on the cloud side.
    if not (gcp.temp_location or gcp.staging_location or gcp.template_location):
        raise UsageError("DataflowRunner needs --temp_location gs://BUCKET/tmp "
                         "(and optionally --staging_location gs://BUCKET/staging)")
    for flag in ("temp_location", "staging_location"):
        value = getattr(gcp, flag)
        if value and not _GCS_PATH.match(value):
            raise UsageError(f"--{flag} must be a gs://BUCKET/PATH location, not {value!r}")
    if gcp.job_name and not _JOB_NAME.match(gcp.job_name):
        raise UsageError(f"--job_name {gcp.job_name!r}: lowercase letters, digits and '-', "
                         "starting with a letter")
    setup = options.view_as(SetupOptions)
    if not (setup.setup_file or setup.extra_packages
            or options.view_as(WorkerOptions).sdk_container_image):
        raise UsageError("workers need the txpipe package: pass --setup_file PATH/setup.py "
                         "or --sdk_container_image IMAGE")


def submission_line(result: PipelineResult, options: PipelineOptions) -> str | None:
    """What to say after a Dataflow run with ``options`` returned; None when its counters say
    it better."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    if not isinstance(result, DataflowPipelineResult):
        return None
    gcp = options.view_as(GoogleCloudOptions)
    if not result.has_job:  # a template (the Flex Template launcher asks for one): no job yet
        return f"wrote the Dataflow job to {gcp.template_location}"
    if result.is_in_terminal_state():
        return None
    job_id, region = result.job_id(), gcp.region
    return (f"submitted Dataflow job {gcp.job_name} ({job_id}); follow it at "
            f"https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}"
            f"?project={gcp.project}; stop it with "
            f"`gcloud dataflow jobs drain {job_id} --region {region}`")

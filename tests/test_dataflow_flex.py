"""The Flex Template, checked offline: its metadata is generated from the settings model (and
the committed file is current), Dataflow's API and gcloud accept it, its parameters reach
``run`` through the one translation, and the build / run commands refuse to touch the cloud
without a real project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud.dataflow_v1beta3.types import TemplateMetadata

from txpipe import dataflow, flex_template
from txpipe.cli import plan

ROOT = Path(__file__).resolve().parent.parent
METADATA = ROOT / "dataflow" / "metadata.json"
#: Valid values for the parameters that have no default.
EXAMPLES = {
    "subscription": "projects/my-project-1/subscriptions/transactions-sub",
    "dead_letter_topic": "projects/my-project-1/topics/transactions-dead-letters",
    "window_period": "15",
    "breakdown": "category",
    "bigquery_method": "streaming_inserts",
    "run_id": "stream-20261127T100000Z-0a1b2c3d",
    "anomaly_threshold": "4.5",
    "alert_topic": "txpipe-alerts",
}


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads(METADATA.read_text())


def test_the_committed_metadata_is_what_the_settings_model_generates():
    assert METADATA.read_text() == flex_template.metadata_json(), (
        "regenerate: python -m txpipe.flex_template > dataflow/metadata.json")


def test_metadata_is_what_the_dataflow_api_accepts(metadata):
    parsed = TemplateMetadata.from_json(METADATA.read_text())  # unknown fields raise
    assert parsed.streaming and parsed.supports_exactly_once
    # At-least-once mode may replay a shuffle into the combine: sums would double count.
    assert not parsed.supports_at_least_once
    for p in parsed.parameters:
        assert p.label and p.help_text and p.is_optional, p.name
    for p in metadata["parameters"]:  # each default and example passes its own regex
        value = p.get("defaultValue", EXAMPLES.get(p["name"]))
        assert value is not None and all(re.fullmatch(r, value) for r in p["regexes"]), p
        assert not any(re.fullmatch(r, value + " ;rm") for r in p["regexes"]), p["name"]


def test_all_parameters_together_make_a_valid_run(metadata, tmp_path, monkeypatch):
    """As the launcher passes them: underscored, ``--name=value``, through the translation."""
    monkeypatch.chdir(tmp_path)  # no .env
    values = {p["name"]: p.get("defaultValue", EXAMPLES.get(p["name"]))
              for p in metadata["parameters"]}
    values["window_type"] = "sliding"
    values["anomalies"] = "true"  # the alert topic needs it
    values["late_firings"] = "False"
    run = plan(flex_template.run_flags([f"--{k}={v}" for k, v in values.items()]))
    assert run.settings.window_period_seconds == 15
    assert run.settings.bigquery_dataset_id == values["bigquery_dataset"]
    assert run.source.subscription == values["subscription"]
    assert run.breakdown == "category" and run.dead_letter_topic == values["dead_letter_topic"]
    assert run.settings.anomalies and run.settings.anomaly_threshold == 4.5
    assert run.settings.late_firings is False
    assert run.settings.alert_topic_path.endswith("/topics/txpipe-alerts")


def test_launch_translates_parameters_once_and_leaves_beam_options(monkeypatch):
    seen = []
    monkeypatch.setattr("txpipe.cli.main", lambda argv: seen.append(argv) or 0)
    assert flex_template.launch(["--window_size=60", "--num_workers=3", "--anomalies=False",
                                 "--project=my-project-1", "--dead_letter_topic=x"]) == 0
    assert seen == [["--window-size=60", "--num_workers=3", "--no-anomalies",
                     "--project=my-project-1", "--dead-letter-topic=x",
                     "--runner=DataflowRunner"]]


def test_the_command_line_has_one_spelling(tmp_path, monkeypatch):
    from txpipe.errors import UsageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"--window_size \(the flag is --window-size\)"):
        plan(["--sink", "duckdb", "--output", "w.duckdb", "--window_size=60"])


def test_what_run_says_after_dataflow_returns():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.dataflow_runner import (
        DataflowPipelineResult,
        DataflowRunner,
    )
    from google.cloud import dataflow as api

    # The Flex Template launcher asks for a template: no job exists yet.
    options = PipelineOptions(["--template_location", "gs://b/launch/job_object"])
    result = DataflowPipelineResult(None, DataflowRunner(), options)
    assert dataflow.submission_line(result, options) == (
        "wrote the Dataflow job to gs://b/launch/job_object")
    # A streaming job left running: where to follow it and how to stop it.
    options = PipelineOptions(["--project", "my-project-1", "--region", "europe-west1",
                               "--job_name", "txpipe"])
    job = api.Job(id="2026-11-27_01", current_state=api.JobState.JOB_STATE_RUNNING)
    line = dataflow.submission_line(DataflowPipelineResult(job, DataflowRunner(), options), options)
    assert line.startswith("submitted Dataflow job txpipe (2026-11-27_01)")
    assert "dataflow/jobs/europe-west1/2026-11-27_01?project=my-project-1" in line
    assert "gcloud dataflow jobs drain 2026-11-27_01 --region europe-west1" in line
    # A finished (batch) job: its counters say more.
    job = api.Job(id="2026-11-27_02", current_state=api.JobState.JOB_STATE_DONE)
    result = DataflowPipelineResult(job, DataflowRunner(), options)
    assert dataflow.submission_line(result, options) is None


def test_dockerfile_runs_the_launcher_on_the_installed_package():
    lines = [line.strip() for line in (ROOT / "dataflow" / "Dockerfile").read_text().splitlines()]
    base = next(line for line in lines if line.startswith("ARG LAUNCHER_IMAGE="))
    assert re.search(r"gcr\.io/dataflow-templates-base/python311-template-launcher-base$", base)
    assert "FROM ${LAUNCHER_IMAGE}" in lines
    assert "COPY dataflow/main.py ./main.py" in lines
    assert 'ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/main.py"' in lines
    assert 'ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"' in lines
    assert any("pip install --no-cache-dir -e ." in line for line in lines)
    assert lines[-1] == 'ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]'
    admitted = (ROOT / "dataflow" / "Dockerfile.dockerignore").read_text()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert f"!{source.rstrip('/')}" in admitted.replace("/\n", "\n"), source
                assert (ROOT / source).exists(), source


def _flex(action: str, project: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ID": project, "DRY_RUN": "1",
           "PY": sys.executable}
    return subprocess.run([str(ROOT / "dataflow" / "flex-template.sh"), action], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
def test_flex_template_refuses_the_offline_project():
    proc = _flex("build", dataflow.local_project())
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "PROJECT_ID" in proc.stderr


@pytest.mark.subprocess
def test_flex_template_commands(tmp_path):
    build = _flex("build", "my-project-1")
    assert build.returncode == 0, build.stderr
    assert "gcloud builds submit --project my-project-1 --config dataflow/cloudbuild.yaml" in (
        build.stdout)
    assert ("gcloud dataflow flex-template build gs://my-project-1-txpipe/templates/txpipe.json"
            in build.stdout and "--metadata-file dataflow/metadata.json" in build.stdout)
    run = _flex("run", "my-project-1")
    assert run.returncode == 0, run.stderr
    for flag in ("--enable-streaming-engine", "--num-workers 2", "--max-workers 10",
                 "--worker-machine-type n1-standard-2", "--staging-location gs://"):
        assert flag in run.stdout


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="needs the Google Cloud CLI")
def test_gcloud_builds_the_spec_from_our_metadata(metadata):
    proc = subprocess.run(
        ["gcloud", "dataflow", "flex-template", "build", "gs://my-bucket/t.json",
         "--image", "example.com/txpipe-flex:1", "--sdk-language", "PYTHON",
         "--metadata-file", str(METADATA), "--print-only", "--project", "my-project-1"],
        env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert spec["image"] == "example.com/txpipe-flex:1"
    assert spec["sdkInfo"]["language"] == "PYTHON"
    assert [p["name"] for p in spec["metadata"]["parameters"]] == [
        p["name"] for p in metadata["parameters"]]

"""The Dataflow job, verified offline: ``python -m txpipe export-job`` writes what
``run --runner DataflowRunner`` would submit, and these tests read it back step by step.

The export runs once, in a subprocess whose sockets are disabled (a ``sitecustomize`` that
refuses and records every IPv4 / IPv6 connection), so it also proves that nothing in the export
— Beam's stager, the sdist build, credential lookup — reaches for the network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as api

from txpipe import dataflow
from txpipe import export as export_command
from txpipe.cli import main as run_main
from txpipe.config import Settings
from txpipe.contract import ATTR_EVENT_TS, ATTR_TRANSACTION_ID

pytestmark = pytest.mark.subprocess  # commands run as a user runs them

NO_NETWORK = '''
import os, socket

_log = os.environ["TXPIPE_TEST_NETWORK_LOG"]
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _refuse(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with open(_log, "a") as log:
            log.write(f"{address!r}\\n")
        raise OSError("network disabled by the test")


def connect(self, address):
    _refuse(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _refuse(self, address)
    return _connect_ex(self, address)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
'''


@dataclass
class Export:
    directory: Path
    proc: subprocess.CompletedProcess
    network_log: Path
    env: dict

    @property
    def job(self) -> dict:
        return json.loads((self.directory / "template.json").read_text())

    @property
    def options(self) -> dict:
        return self.job["environment"]["sdkPipelineOptions"]["options"]

    @property
    def graph(self) -> api.Pipeline:
        graph = api.Pipeline()
        graph.ParseFromString((self.directory / "pipeline.pb").read_bytes())
        return graph

    def transforms(self) -> dict[str, api.PTransform]:
        return {t.unique_name: t for t in self.graph.components.transforms.values()}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Export:
    work = tmp_path_factory.mktemp("export")
    guard = work / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    network_log = work / "network.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_", "BIGQUERY_"))}
    env.pop("PROJECT_ID", None)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(guard), env.get("PYTHONPATH")])),
               TXPIPE_TEST_NETWORK_LOG=str(network_log))
    proc = subprocess.run(  # cwd without a .env: the defaults, as a new user has them
        [sys.executable, "-m", "txpipe", "export-job", "--output", "job", "--streaming"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    return Export(work / "job", proc, network_log, env)


def test_export_writes_the_job_with_no_network(export):
    """No network and no credential lookup (it would retry for ≈26 s: the guard logs each
    attempt); its time is measured in benchmarks, not asserted here."""
    assert export.proc.returncode == 0, export.proc.stderr
    assert export.proc.stdout.count("\n") == 1 and "JOB_TYPE_STREAMING" in export.proc.stdout
    assert export.proc.stderr == ""
    assert not export.network_log.exists(), export.network_log.read_text()
    # ... and the guard was really in force in that environment:
    probe = subprocess.run([sys.executable, "-c", "import socket; "
                            "socket.create_connection(('192.0.2.1', 443), timeout=1)"],
                           env=export.env, capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and "network disabled" in probe.stderr
    assert "192.0.2.1" in export.network_log.read_text()
    export.network_log.unlink()


def test_streaming_job_on_streaming_engine(export):
    job = export.job
    assert job["type"] == "JOB_TYPE_STREAMING"
    assert {"enable_streaming_engine", "enable_windmill_service"} <= set(
        job["environment"]["experiments"])
    assert export.options["streaming"] is True
    assert export.options["enable_streaming_engine"] is True
    assert export.options["runner"] == "DataflowRunner"
    assert job["name"] == export.options["job_name"] == dataflow.STREAMING_JOB_NAME


def test_seed_worker_shape_by_default(export):
    (pool,) = export.job["environment"]["workerPools"]
    assert pool["numWorkers"] == 2
    assert pool["machineType"] == "n1-standard-2"
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 10
    # Beam sends THROUGHPUT_BASED to the service under its API name.
    assert pool["autoscalingSettings"]["algorithm"] == "AUTOSCALING_ALGORITHM_BASIC"
    assert export.options["autoscaling_algorithm"] == "THROUGHPUT_BASED"


def test_reads_pubsub_with_event_time_and_id_attributes(export):
    reads = [t for t in export.transforms().values()
             if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert len(reads) == 1 and reads[0].unique_name.startswith("Read/")
    payload = api.PubSubReadPayload.FromString(reads[0].spec.payload)
    assert payload.subscription == Settings.model_construct().subscription_path
    assert payload.timestamp_attribute == ATTR_EVENT_TS
    assert payload.id_attribute == ATTR_TRANSACTION_ID


def test_every_stage_is_a_named_step(export):
    names = export.transforms()
    top = {t.unique_name for t in names.values() if "/" not in t.unique_name and t.unique_name
           and not t.unique_name.startswith("ref_")}
    # These names are the --update contract: Dataflow maps running state by them.
    assert top == {"Read", "TransactionStats", "WriteWindows", "CollectDeadLetters",
                   "IdentifyDeadLetters", "WriteDeadLetters"}
    for stage in ("Parse", "Dedupe", "Window", "Aggregate"):
        assert f"TransactionStats/{stage}" in names
    assert names["TransactionStats/Parse/Validate/ParDo(ParseFn)"].spec.urn == (
        "beam:transform:pardo:v1")
    assert names["TransactionStats/Aggregate/Combine"].spec.urn == (
        "beam:transform:combine_per_key:v1")
    # each bundle's transactions are folded into one accumulator per window before the shuffle
    precombine = names["TransactionStats/Aggregate/Precombine"]
    assert precombine.spec.urn == "beam:transform:pardo:v1"
    (combine_input,) = names["TransactionStats/Aggregate/Combine"].inputs.values()
    assert [combine_input] == list(precombine.outputs.values())
    # WindowInto run as the ParDo it is built on (txpipe.windowing.AssignWindows); its output's
    # windowing strategy is the spec's (test_windows_are_event_time_with_allowed_lateness)
    assert names["TransactionStats/Window/AssignWindows"].spec.urn == (
        "beam:transform:pardo:v1")


def test_dedupe_is_the_sources_on_dataflow_within_its_ten_minutes(export):
    """Dataflow drops repeated id_label values for 10 minutes: within that horizon (the
    default 600 s) Dedupe only counts — no keyed state per transaction."""
    names = export.transforms()
    dedupe = [t for name, t in names.items() if name.startswith("TransactionStats/Dedupe/")]
    assert [t.unique_name for t in dedupe] == ["TransactionStats/Dedupe/CountUnique"]
    for t in dedupe:
        if t.spec.urn == "beam:transform:pardo:v1":
            pardo = api.ParDoPayload.FromString(t.spec.payload)
            assert not pardo.state_specs and not pardo.timer_family_specs


def test_a_longer_horizon_keeps_per_id_state_with_a_processing_time_timer(export, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "txpipe", "export-job", "--output", "job", "--streaming",
         "--dedupe-horizon", "1800"], cwd=tmp_path, env=export.env, capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    graph = api.Pipeline.FromString((tmp_path / "job" / "pipeline.pb").read_bytes())
    (dedupe,) = [t for t in graph.components.transforms.values()
                 if t.unique_name.startswith("TransactionStats/Dedupe/FirstDelivery/")
                 and t.spec.urn == "beam:transform:pardo:v1"]
    pardo = api.ParDoPayload.FromString(dedupe.spec.payload)
    assert set(pardo.state_specs) == {"seen"}  # Beam's own DeduplicatePerKey
    # Processing time: forgetting an id must never hold back the event-time watermark.
    assert api.TimeDomain.PROCESSING_TIME in {
        t.time_domain for t in pardo.timer_family_specs.values()}


def test_windows_are_event_time_with_allowed_lateness(export):
    graph = export.graph
    assign = export.transforms()["TransactionStats/Window/AssignWindows"]
    (out,) = assign.outputs.values()
    strategy = graph.components.windowing_strategies[
        graph.components.pcollections[out].windowing_strategy_id]
    assert strategy.window_fn.urn == "beam:window_fn:fixed_windows:v1"
    assert strategy.allowed_lateness == 30_000
    assert strategy.accumulation_mode == api.AccumulationMode.ACCUMULATING


def test_writes_bigquery_through_write_to_bigquery_with_streaming_inserts(export):
    names = export.transforms()
    for table in ("WriteWindows", "WriteDeadLetters"):  # Beam's own transform, every table
        assert f"{table}/WriteToBigQuery" in names
        assert f"{table}/WriteToBigQuery/_StreamToBigQuery/StreamInsertRows" in names
        # Beam's insert ids, checkpointed by a shuffle before the insert
        assert f"{table}/WriteToBigQuery/_StreamToBigQuery/CommitInsertIds" in names
    assert "WriteWindows/Identify" in names  # the run id on every row
    assert not any("StreamingInsertFn" in n for n in names)  # no writer of our own
    # the job's run id, drawn at build time, is in its options: --update must repeat it
    assert re.fullmatch(r"stream-\d{8}T\d{6}Z-[0-9a-f]{8}", export.options["run_id"])


def test_rows_bigquery_refuses_flow_into_the_dead_letters(export):
    """The rejected-rows branch: WriteToBigQuery's FailedRowsWithErrors -> RejectedRows ->
    (with the parse dead letters) IdentifyDeadLetters -> WriteDeadLetters; the dead-letter
    table's own refusals -> Unwritten (log and counter)."""
    graph, names = export.graph, export.transforms()
    write = names["WriteWindows/WriteToBigQuery/_StreamToBigQuery/StreamInsertRows"]
    refused = next(pc for tag, pc in write.outputs.items() if tag == "FailedRowsWithErrors")
    rejected = names["WriteWindows/RejectedRows"]
    assert refused in rejected.inputs.values()
    (into_dead,) = names["WriteWindows/ToGlobalWindow"].outputs.values()
    collect = names["CollectDeadLetters"]
    assert into_dead in collect.inputs.values()
    assert collect.spec.urn == "beam:transform:flatten:v1" and len(collect.inputs) == 2
    (collected,) = collect.outputs.values()
    assert collected in names["IdentifyDeadLetters"].inputs.values()
    (identified,) = names["IdentifyDeadLetters"].outputs.values()
    assert identified in names["WriteDeadLetters"].inputs.values()
    dead_write = names["WriteDeadLetters/WriteToBigQuery/_StreamToBigQuery/StreamInsertRows"]
    dead_refused = dead_write.outputs["FailedRowsWithErrors"]
    assert dead_refused in names["WriteDeadLetters/Unwritten"].inputs.values()
    assert graph.components.pcollections[into_dead].is_bounded == api.IsBounded.UNBOUNDED


def test_dead_letters_get_their_ids_from_keyed_state_in_a_stream(export):
    number = export.transforms()["IdentifyDeadLetters/NumberCopies"]
    pardo = api.ParDoPayload.FromString(number.spec.payload)
    assert set(pardo.state_specs) == {"copies"} and not pardo.timer_family_specs


def test_storage_write_is_refused_offline_in_one_line(export, tmp_path):
    """Beam's Storage Write transform needs its Java expansion service jar; with no cached jar
    and no network (the export's socket guard) both commands refuse it before building."""
    env = {**export.env, "HOME": str(tmp_path)}  # Beam caches the jar under ~/.apache_beam
    for command in (["export-job", "--output", "job", "--streaming"], ["run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "txpipe", *command, "--bigquery-method", "storage_write"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "--bigquery-method storage_write:" in (
            proc.stderr) and "expansion service" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "job").exists()


def test_txpipe_package_is_staged(export):
    package = export.directory / "workflow.tar.gz"
    assert package.is_file()
    (pool,) = export.job["environment"]["workerPools"]
    assert {"name": "workflow.tar.gz", "location": str(package)} in pool["packages"]
    assert export.options["setup_file"].endswith("setup.py")
    (environment,) = export.graph.components.environments.values()
    staged = [api.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
              for d in environment.dependencies]
    assert "workflow.tar.gz" in staged
    with tarfile.open(package) as sdist:
        files = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"setup.py", "pyproject.toml", "txpipe/pipeline.py", "txpipe/dataflow.py"} <= files


@pytest.mark.parametrize("argv, says", [
    ([], "--output"),
    (["--output", "job", "--runner", "DirectRunner"], "not Dataflow"),
    (["--output", "job", "--setup_file", "gs://bucket/setup.py"], "offline"),
    (["--output", "job", "--temp_location", "/tmp/t"], "--temp_location"),
    (["--output", "job", "--update", "--job_name", "txpipe"], "--update"),
    (["--output", "job", "--window-size", "0"], "WINDOW_SIZE_SECONDS"),
    (["--output", "job", "--no-such-flag"], "unrecognized"),
])
def test_export_usage_errors_are_one_line_exit_2(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert export_command.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("txpipe export-job: error:") and says in err
    assert not (tmp_path / "job" / "template.json").exists()


@pytest.mark.parametrize("argv, says", [
    (["--runner", "DataflowRunner"], "PROJECT_ID"),
    (["--runner", "DataflowRunner", "--project", "my-project-1"], "--temp_location"),
    (["--runner", "DataflowRunner", "--project", "my-project-1", "--temp_location", "/tmp/x"],
     "gs://"),
    # --update keeps the running job's state: its rows must keep its run id
    (["--runner", "DataflowRunner", "--project", "my-project-1", "--temp_location",
      "gs://b/tmp", "--update"], "--run-id"),
])
def test_run_on_dataflow_refuses_what_the_service_would(argv, says, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROJECT_ID", raising=False)
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


@pytest.fixture(scope="module")
def anomaly_export(tmp_path_factory) -> Export:
    """The job with anomaly detection per category and an alert topic (in-process export)."""
    work = tmp_path_factory.mktemp("export-anomalies")
    job = export_command.export_job(
        ["--output", str(work / "job"), "--streaming", "--anomalies", "--breakdown", "category",
         "--alert-topic", "txpipe-alerts"])
    return Export(job.directory, subprocess.CompletedProcess([], 0), work / "network.log", {})


def test_the_anomaly_job_shows_the_detection_step(anomaly_export):
    names = anomaly_export.transforms()
    top = {n for n in names if "/" not in n and n and not n.startswith("ref_")}
    assert top == {"Read", "TransactionStats", "WriteWindows", "CollectDeadLetters",
                   "IdentifyDeadLetters", "WriteDeadLetters", "WriteDimensionStats",
                   "DetectAnomalies", "WriteAnomalies", "AnomaliesToJson", "PublishAnomalies"}
    # anomaly rows BigQuery refuses become dead letters beside the others
    (refused,) = names["WriteAnomalies/ToGlobalWindow"].outputs.values()
    assert refused in names["CollectDeadLetters"].inputs.values()
    graph = anomaly_export.graph
    # one history per series: re-windowed into the global window before Beam's detector
    history = names["DetectAnomalies/Score/SeriesHistory"]
    (out,) = history.outputs.values()
    strategy = graph.components.windowing_strategies[
        graph.components.pcollections[out].windowing_strategy_id]
    assert strategy.window_fn.urn == "beam:window_fn:global_windows:v1"
    # Beam's AnomalyDetection: a stateful ParDo holding the detector, per series key
    detection = [n for n in names if n.startswith("DetectAnomalies/Score/AnomalyDetection/")]
    scoring = [names[n] for n in detection if n.endswith("ParDo(_ScoreAndLearnDoFn)")]
    assert len(scoring) == 1
    assert set(api.ParDoPayload.FromString(scoring[0].spec.payload).state_specs) == {"saved_model"}
    # workers import txpipe.anomaly at start-up, so Beam's registry can rebuild the detector
    assert "txpipe.anomaly._WorkerImport" in anomaly_export.options["beam_plugins"]
    assert anomaly_export.options["anomalies"] is True
    (write,) = [t for t in names.values() if t.spec.urn == "beam:transform:pubsub_write:v1"]
    assert write.unique_name.startswith("PublishAnomalies/")
    assert api.PubSubWritePayload.FromString(write.spec.payload).topic == (
        f"projects/{Settings.model_construct().project_id}/topics/txpipe-alerts")
    assert "WriteAnomalies/WriteToBigQuery/_StreamToBigQuery/StreamInsertRows" in names

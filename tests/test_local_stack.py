"""The local stack's process management and resource setup, against the real emulators.
The commands run in this process (``local up`` still starts the JVM as a process of its own);
one runs as a whole process, for its exit status and its one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import unique_settings
from google.api_core.exceptions import NotFound
from google.cloud import pubsub_v1

from txpipe.__main__ import main as txpipe_main
from txpipe.lab.local import PubSubEmulator, free_port, pid_alive
from txpipe.resources import bigquery_client


@pytest.fixture
def txpipe(in_process):
    """``python -m txpipe ARGS`` in ``cwd`` with ``env``, run in this process."""
    def run(*args: str, cwd: Path, env: dict | None = None):
        return in_process(txpipe_main, list(args), cwd=cwd, env=env)
    return run


def processes_serving(port: int) -> list[psutil.Process]:
    """Every process (JVM or wrapper) started for this port, whoever its parent is."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if f"--port={port}" in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")}
    env.update(extra)
    return env


@pytest.mark.emulator
def test_up_down_twice_leaves_no_process(tmp_path, txpipe):
    port = free_port()
    for _ in range(2):
        up = txpipe("local", "up", "--port", str(port), cwd=tmp_path, env=clean_env())
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / ".local" / "pubsub-emulator.json").read_text())
        assert state["port"] == port and pid_alive(state["pid"])
        # the recorded PID is the JVM itself, so stopping it stops everything
        assert psutil.Process(state["pid"]).name() == "java"
        assert [p.pid for p in processes_serving(port)] == [state["pid"]]
        assert f"export PUBSUB_EMULATOR_HOST=127.0.0.1:{port}" in up.stdout

        again = txpipe("local", "up", "--port", str(port), cwd=tmp_path, env=clean_env())
        assert again.returncode == 0 and "already running" in again.stdout
        status = txpipe("local", "status", cwd=tmp_path, env=clean_env())
        assert status.returncode == 0 and "answering" in status.stdout

        down = txpipe("local", "down", cwd=tmp_path, env=clean_env())
        assert down.returncode == 0 and f"stopped (pid {state['pid']})" in down.stdout
        assert not pid_alive(state["pid"])
        assert processes_serving(port) == []
        assert not (tmp_path / ".local" / "pubsub-emulator.json").exists()

        repeat = txpipe("local", "down", cwd=tmp_path, env=clean_env())
        assert repeat.returncode == 0 and "not running" in repeat.stdout
    status = txpipe("local", "status", cwd=tmp_path, env=clean_env())
    assert status.returncode == 1 and "not running" in status.stdout


@pytest.mark.emulator
def test_up_creates_topic_subscription_and_dead_letter_topic(tmp_path, txpipe):
    port = free_port()
    env = clean_env(PUBSUB_TOPIC_ID="orders", PUBSUB_SUBSCRIPTION_ID="orders-sub",
                    PUBSUB_DEAD_LETTER_TOPIC_ID="orders-dead", PROJECT_ID="txpipe-cli")
    try:
        assert txpipe("local", "up", "--port", str(port), cwd=tmp_path, env=env).returncode == 0
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        try:
            publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        finally:
            del os.environ["PUBSUB_EMULATOR_HOST"]
        publisher.get_topic(request={"topic": "projects/txpipe-cli/topics/orders"})
        publisher.get_topic(request={"topic": "projects/txpipe-cli/topics/orders-dead"})
        sub = subscriber.get_subscription(
            request={"subscription": "projects/txpipe-cli/subscriptions/orders-sub"})
        assert sub.topic == "projects/txpipe-cli/topics/orders"
        env_line = txpipe("local", "env", cwd=tmp_path, env=env)
        assert env_line.stdout.strip() == f"export PUBSUB_EMULATOR_HOST=127.0.0.1:{port}"
    finally:
        assert txpipe("local", "down", cwd=tmp_path, env=env).returncode == 0
    assert processes_serving(port) == []


@pytest.mark.emulator
def test_python_api_context_manager_stops_the_jvm():
    with PubSubEmulator() as emulator:
        pid, port = emulator.pid, emulator.port
        assert emulator.emulator_host == f"127.0.0.1:{port}"
        settings = unique_settings()
        assert len(emulator.ensure_resources(settings)) == 3
        assert emulator.ensure_resources(settings) == []  # idempotent
        emulator.stop()
        emulator.stop()  # safe twice
    assert not pid_alive(pid)
    assert processes_serving(port) == []


@pytest.mark.subprocess
def test_missing_emulator_is_one_line_with_the_install_hint(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "txpipe", "local", "up"], cwd=tmp_path,
                            env=clean_env(PATH=str(empty)), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "gcloud components install pubsub-emulator" in lines[0]
    assert "google-cloud-cli-pubsub-emulator" in lines[0]


def test_busy_port_is_one_line(tmp_path, pubsub_emulator, txpipe):
    result = txpipe("local", "up", "--port", str(pubsub_emulator.port), cwd=tmp_path,
                    env=clean_env())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already in use" in result.stderr


def test_setup_dry_run_prints_the_plan_and_touches_nothing(tmp_path, txpipe):
    result = txpipe("setup", "--dry-run", cwd=tmp_path, env=clean_env(PROJECT_ID="txpipe-plan"))
    assert result.returncode == 0, result.stderr
    for line in ("topic             projects/txpipe-plan/topics/transactions",
                 "subscription      projects/txpipe-plan/subscriptions/transactions-sub",
                 "dead-letter topic projects/txpipe-plan/topics/transactions-dead-letters",
                 "dataset           txpipe-plan:streaming_data_warehouse_v2",
                 "window table      txpipe-plan:streaming_data_warehouse_v2."
                 "hourly_sales_aggregation (DAY partitions on window_start_time",
                 "dead-letter table txpipe-plan:streaming_data_warehouse_v2.dead_letters",
                 "totals view       txpipe-plan:streaming_data_warehouse_v2.window_totals"):
        assert line in result.stdout


def test_setup_without_credentials_is_one_line_exit_2(tmp_path, txpipe):
    env = clean_env(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"),
                    CLOUDSDK_CONFIG=str(tmp_path))
    result = txpipe("setup", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_setup_is_idempotent_against_both_emulators(tmp_path, pubsub_emulator, bigquery_emulator,
                                                   txpipe):
    settings = unique_settings()
    env = clean_env(
        PUBSUB_EMULATOR_HOST=pubsub_emulator.emulator_host,
        BIGQUERY_EMULATOR_HOST=bigquery_emulator.endpoint,
        **{k.upper(): str(v) for k, v in settings.model_dump(mode="json").items()
           if v is not None and k.endswith(("_id", "project_id"))},
    )
    first = txpipe("setup", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 8  # 3 in Pub/Sub; dataset, 2 tables, 2 views
    second = txpipe("setup", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": exists") == 8 and "created" not in second.stdout

    client = bigquery_client(settings.project_id)
    table = client.get_table(f"{settings.project_id}.{settings.bigquery_dataset_id}."
                             f"{settings.bigquery_table_id}")
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "window_start_time"
    assert table.clustering_fields == ["window_start_time"]
    assert [f.name for f in table.schema][:3] == [
        "window_start_time", "window_end_time", "total_transactions"]
    assert {f.name: f.mode for f in table.schema}["total_transactions"] == "REQUIRED"
    dead = client.get_table(f"{settings.project_id}.{settings.bigquery_dataset_id}."
                            f"{settings.bigquery_dead_letter_table_id}")
    assert dead.time_partitioning.field == "seen_at"
    with pytest.raises(NotFound):
        client.get_table(f"{settings.project_id}.{settings.bigquery_dataset_id}.absent")

"""Without Java, the Google Cloud CLI or its emulator component, emulator tests skip and say
what to install (they do not error); the probe names the first thing missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from emulator import missing_bigquery_emulator, missing_pubsub_emulator

ROOT = Path(__file__).resolve().parent.parent


def _executable(folder: Path, name: str, body: str = "exit 0") -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_no_java_is_named_first(tmp_path, monkeypatch):
    _executable(tmp_path, "gcloud")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no `java` on PATH" in missing_pubsub_emulator()


def test_no_gcloud_is_named_when_java_is_there(tmp_path, monkeypatch):
    _executable(tmp_path, "java")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no `gcloud` on PATH" in missing_pubsub_emulator()


def test_a_cloud_cli_without_the_emulator_component_says_how_to_add_it(tmp_path, monkeypatch):
    _executable(tmp_path, "java")
    _executable(tmp_path, "gcloud", f"echo {tmp_path}")  # `gcloud info`: an SDK root without it
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "gcloud components install pubsub-emulator" in missing_pubsub_emulator()


def test_no_bqemulator_beside_python_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert "`bqemulator` is missing" in missing_bigquery_emulator()


@pytest.mark.subprocess
def test_an_emulator_test_skips_with_the_reason_when_java_is_missing(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no java, no gcloud
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
         "tests/test_simulator_pubsub.py::test_rejected_requests_are_counted_failed_never_dropped",
         "tests/test_local_stack.py::test_up_down_twice_leaves_no_process"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout and "passed" not in done.stdout, done.stdout
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped == [next(line for line in skipped if "[2]" in line)], done.stdout
    assert skipped[0].endswith("needs the Pub/Sub emulator: no `java` on PATH "
                               "(install a Java 11+ runtime)")

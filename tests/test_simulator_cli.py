"""``python -m simulator`` as a user runs it: output, determinism, one-line errors (its ``main``
run in this process), clean stops on a signal or a closed pipe (whole processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli import run_in_process

from simulator import SimulationConfig, Truth, generate
from simulator.cli import main as simulator_main
from txpipe.contract import Invalid, Transaction, validate

REPLAY = ["--start", "2026-11-27T10:00:00Z", "--rate", "0", "--seed", "9", "--count", "3000",
          "--duplicate-rate", "0.05", "--malformed-rate", "0.05", "--late-rate", "0.02",
          "--jitter-seconds", "2"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus txpipe's own variables, so a developer's .env cannot leak in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUBLISHER_", "PROJECT_ID", "PUBSUB_", "WINDOW_"))}
    env.update(extra)
    return env


@pytest.fixture
def simulator(capsysbinary):
    """``python -m simulator ARGS`` in ``cwd``, run in this process: (status, stdout bytes,
    stderr text) — stdout carries the malformed messages' bytes as they are."""
    def run(*args: str, cwd: Path, **env: str):
        ran = run_in_process(capsysbinary, simulator_main, list(args), cwd=cwd,
                             env=clean_env(**env))
        return ran.returncode, ran.stdout, ran.stderr.decode()
    return run


def test_five_valid_messages_on_stdout(tmp_path, simulator):
    code, out, err = simulator("--target", "stdout", "--count", "5", "--rate", "50", cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5
    assert all(isinstance(validate(line), Transaction) for line in lines)
    assert err.count("\n") == 1
    assert "published 5 messages to stdout" in err


def test_defaults_come_from_the_seed_settings(tmp_path, simulator):
    code, out, err = simulator("--target", "stdout", cwd=tmp_path, PUBLISHER_MAX_MESSAGES="3",
                               PUBLISHER_INTERVAL="0")
    assert code == 0, err
    assert len(out.splitlines()) == 3


def test_same_seed_and_flags_give_byte_identical_stdout_and_file(tmp_path, simulator):
    first = simulator("--target", "stdout", *REPLAY, cwd=tmp_path)
    second = simulator("--target", "stdout", *REPLAY, cwd=tmp_path)
    out = tmp_path / "stream.jsonl"
    to_file = simulator("--target", "file", "--output", str(out), *REPLAY, cwd=tmp_path)
    assert first[0] == second[0] == to_file[0] == 0
    assert first[1] == second[1] == out.read_bytes()
    assert len(first[1].splitlines()) == 3000
    other_seed = simulator("--target", "stdout", *REPLAY, "--seed", "10", cwd=tmp_path)
    assert other_seed[1] != first[1]


def test_file_target_writes_truth_and_stats(tmp_path, simulator):
    out, truth, stats = tmp_path / "s.jsonl", tmp_path / "truth.json", tmp_path / "stats.json"
    code, _, err = simulator("--target", "file", "--output", str(out), *REPLAY, "--window-size",
                             "60", "--truth", str(truth), "--stats-json", str(stats), cwd=tmp_path)
    assert code == 0, err
    cfg = SimulationConfig.from_dict(json.loads(truth.read_text())["config"])
    assert cfg.window_size == 60 and cfg.seed == 9
    assert Truth.from_json(truth) == Truth.from_messages(cfg, generate(cfg))
    numbers = json.loads(stats.read_text())
    assert numbers["published"] == 3000 and numbers["failed"] == 0
    assert numbers["elapsed_s"] > 0 and numbers["rate_msg_s"] > 0
    verdicts = [validate(line) for line in out.read_bytes().splitlines()]
    assert sum(isinstance(v, Invalid) for v in verdicts) == sum(Truth.from_json(truth).malformed.values())


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--rate", "-1"], {}, "--rate"),
    (["--count", "abc"], {}, "--count"),
    (["--late-rate", "2"], {}, "--late-rate"),
    (["--duplicate-rate", "0.7", "--malformed-rate", "0.5"], {}, "--malformed-rate"),
    (["--target", "file"], {}, "--output"),
    (["--target", "file", "--output", "x.jsonl", "--count", "0"], {}, "--count or --duration"),
    (["--target", "stdout", "--output", "x.jsonl"], {}, "--output"),
    (["--start", "2026-11-27T10:00:00"], {}, "UTC offset"),
    (["--target", "nowhere"], {}, "--target"),
    (["--bogus"], {}, "--bogus"),
    (["--truth", "/no/such/dir/t.json"], {}, "--truth"),
    ([], {"PUBLISHER_INTERVAL": "soon"}, "PUBLISHER_INTERVAL"),
    (["--topic", "9 bad"], {}, "PUBSUB_TOPIC_ID"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, simulator, args, env, says):
    code, out, err = simulator("--target", "stdout", "--count", "1", *args, cwd=tmp_path, **env)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert says in err
    assert out == b""


@pytest.mark.subprocess
def test_sigint_flushes_and_exits_0_with_a_summary(tmp_path):
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--target", "stdout", "--rate", "200", "--count", "0",
         "--stats-json", str(stats)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=clean_env())
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) > 50
    assert all(isinstance(validate(line), Transaction) for line in lines)  # none cut in half
    numbers = json.loads(stats.read_text())
    assert numbers["published"] == len(lines) and numbers["interrupted"] is True
    assert "stopped early" in err.decode() and err.decode().count("\n") == 1


@pytest.mark.subprocess
def test_a_reader_that_goes_away_stops_the_stream_quietly(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--target", "stdout", "--rate", "0", "--count", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=clean_env())
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.wait(timeout=20) == 0, err
    assert all(isinstance(validate(line), Transaction) for line in first)
    assert "Traceback" not in err and "stopped early" in err

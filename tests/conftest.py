"""Shared fixtures: real emulators on free ports, started once per session, stopped by PID.

``pubsub_emulator`` points PUBSUB_EMULATOR_HOST at the session's emulator for one test;
``pubsub_settings`` adds a topic / subscription / dead-letter topic of the test's own, so tests
never read each other's messages. ``bigquery_emulator`` does the same for BIGQUERY_EMULATOR_HOST.

Tiers (markers declared in pyproject.toml; ``make check`` runs what has none of them):
``emulator`` is set here on every test that uses an emulator fixture, and such a test skips,
saying what to install, when the emulator cannot run on this machine; ``subprocess`` (a test
that starts a Python process) and ``slow`` are set by ``pytestmark`` in the modules. A test
that starts a Python process without the ``subprocess`` marker fails, so none hides in the
quick tier.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import uuid
from collections.abc import Iterator

import pytest
from cli import run_in_process
from emulator import missing_bigquery_emulator, missing_pubsub_emulator

from txpipe.config import Settings, load_settings
from txpipe.lab.local import BigQueryEmulator, PubSubEmulator

PROJECT = "txpipe-test"

# The demo's live page is a process of its own and a browser's worth of CPU: the tests that run
# the demo check its books, not its page; the browser test (which clears DEMO_*) turns it on.
os.environ.setdefault("DEMO_DASHBOARD", "0")
BIGQUERY_FIXTURES = {"bigquery_emulator_process"}
EMULATOR_FIXTURES = {"pubsub_emulator_process", *BIGQUERY_FIXTURES}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if EMULATOR_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("emulator") is None:
        return
    needs_bigquery = BIGQUERY_FIXTURES & set(getattr(item, "fixturenames", ()))
    reason = missing_bigquery_emulator() if needs_bigquery else None
    reason = reason or missing_pubsub_emulator()
    if reason:
        pytest.skip(reason)


# --- no Python process started outside the `subprocess` tier --------------------------------

_python_allowed = True


_PYTHONS = {os.path.realpath(sys.executable)}


def _refuse_unmarked_python(event: str, args: tuple) -> None:
    if event != "subprocess.Popen" or _python_allowed:
        return
    executable, argv = args[0], args[1]
    if executable is None:
        executable = argv if isinstance(argv, (str, bytes, os.PathLike)) else argv[0]
    program = os.fsdecode(executable)
    if os.sep not in program:
        program = shutil.which(program) or program
    if os.path.realpath(program) in _PYTHONS:
        raise RuntimeError("this test starts a Python process: mark it "
                           "`pytest.mark.subprocess` (or convert it to an in-process call)")


sys.addaudithook(_refuse_unmarked_python)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _python_allowed
    _python_allowed = item.get_closest_marker("subprocess") is not None
    try:
        return (yield)
    finally:
        _python_allowed = True


@pytest.fixture
def in_process(capsys):
    """``in_process(main, argv, cwd=..., env=...)``: a command run here, not in a new process."""
    return functools.partial(run_in_process, capsys)


# --- emulators -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pubsub_emulator_process(tmp_path_factory) -> Iterator[PubSubEmulator]:
    """One Pub/Sub emulator JVM for the whole session (one per xdist worker)."""
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    with PubSubEmulator(log_path=log) as emulator:
        yield emulator


@pytest.fixture
def pubsub_emulator(pubsub_emulator_process, monkeypatch) -> PubSubEmulator:
    """The session's emulator, with PUBSUB_EMULATOR_HOST set for this test."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_process.emulator_host)
    return pubsub_emulator_process


def unique_settings(**overrides) -> Settings:
    """Settings with resource names of their own (no ``.env`` read)."""
    tag = uuid.uuid4().hex[:8]
    names = dict(
        project_id=PROJECT,
        pubsub_topic_id=f"tx-{tag}",
        pubsub_subscription_id=f"tx-{tag}-sub",
        pubsub_dead_letter_topic_id=f"tx-{tag}-dead",
        bigquery_dataset_id=f"ds_{tag}",
    )
    names.update(overrides)
    return load_settings(env_file=None, **names)


@pytest.fixture
def pubsub_settings(pubsub_emulator) -> Settings:
    """Fresh topic, subscription and dead-letter topic on the emulator for this test."""
    settings = unique_settings()
    pubsub_emulator.ensure_resources(settings)
    return settings


@pytest.fixture(scope="session")
def bigquery_emulator_process(tmp_path_factory) -> Iterator[BigQueryEmulator]:
    log = tmp_path_factory.mktemp("bigquery") / "emulator.log"
    with BigQueryEmulator(PROJECT, log_path=log) as emulator:
        yield emulator


@pytest.fixture
def bigquery_emulator(bigquery_emulator_process, monkeypatch) -> BigQueryEmulator:
    """The session's BigQuery emulator, with BIGQUERY_EMULATOR_HOST set for this test."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator_process.endpoint)
    return bigquery_emulator_process

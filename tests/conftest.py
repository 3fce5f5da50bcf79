"""Shared fixtures: real emulators on free ports, started once per session, stopped by PID.

``pubsub_emulator`` points PUBSUB_EMULATOR_HOST at the session's emulator for one test;
``pubsub_settings`` adds a topic / subscription / dead-letter topic of the test's own, so tests
never read each other's messages. ``bigquery_emulator`` does the same for BIGQUERY_EMULATOR_HOST.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from txpipe.config import Settings, load_settings
from txpipe.lab.local import BigQueryEmulator, PubSubEmulator

PROJECT = "txpipe-test"


@pytest.fixture(scope="session")
def pubsub_emulator_process(tmp_path_factory) -> Iterator[PubSubEmulator]:
    """One Pub/Sub emulator JVM for the whole session."""
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

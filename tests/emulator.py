"""The emulators in tests: whether they can run here (else the one line saying what to
install), and reading back what reached a Pub/Sub subscription, to check publishers."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from google.cloud import pubsub_v1

from txpipe.lab.local import INSTALL_HINT, find_pubsub_launcher


def missing_pubsub_emulator() -> str | None:
    """Why the Pub/Sub emulator cannot start on this machine, or None when it can."""
    if shutil.which("java") is None:
        return "needs the Pub/Sub emulator: no `java` on PATH (install a Java 11+ runtime)"
    if shutil.which("gcloud") is None:
        return ("needs the Pub/Sub emulator: no `gcloud` on PATH (install the Google Cloud CLI, "
                "then `gcloud components install pubsub-emulator`)")
    if find_pubsub_launcher() is None:
        return f"needs the Pub/Sub emulator: {INSTALL_HINT}"
    return None


def missing_bigquery_emulator() -> str | None:
    """Why the BigQuery emulator (the ``bqemulator`` of the dev extra) cannot start, or None."""
    if not Path(sys.executable).with_name("bqemulator").is_file():
        return "needs the BigQuery emulator: `bqemulator` is missing (pip install -e '.[dev]')"
    return None

Received = dict[str, tuple[bytes, dict[str, str]]]


def pull_all(subscription_path: str, expected: int, timeout: float = 60.0) -> Received:
    """Pull and ack until ``expected`` messages arrived and one more pull comes back empty.

    Keyed by message id, so a redelivery collapses onto its message: the result is what the
    topic received. The extra empty pull catches anything sent beyond ``expected``.
    """
    subscriber = pubsub_v1.SubscriberClient()
    received: Received = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(
                request={"subscription": subscription_path, "max_messages": 1000,
                         "return_immediately": len(received) >= expected},
                timeout=10,
            )
            if not response.received_messages:
                if len(received) >= expected:
                    break
                continue
            for item in response.received_messages:
                received[item.message.message_id] = (item.message.data, dict(item.message.attributes))
            subscriber.acknowledge(request={
                "subscription": subscription_path,
                "ack_ids": [item.ack_id for item in response.received_messages],
            })
    finally:
        subscriber.close()
    return received

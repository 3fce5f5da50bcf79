"""Reading back what reached a Pub/Sub subscription, to check publishers against the emulator."""

from __future__ import annotations

import time

from google.cloud import pubsub_v1

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

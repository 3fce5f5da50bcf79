"""The DirectRunner's Pub/Sub read, made fit for local streaming: batched pulls that never block.

Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator``: one synchronous pull of at most
10 messages per bundle, with a 30 s deadline that an empty subscription holds to the end. On a
2-core machine that caps a pipeline at ≈300–450 msg/s (every bundle pays the runner's fixed
scheduling cost for 10 elements), and since the watermark moves only when a pull returns, an
idle stream fires its last windows up to 30 s late and ``cancel()`` waits as long.

:class:`BatchedPubSubReadEvaluator` pulls up to ``bundle_size`` messages per bundle (several
pulls of up to ``max_messages``), asks the server to answer at once when nothing is waiting,
and sleeps ``idle_seconds`` then, so the watermark (wall clock, as in Beam's evaluator) advances
several times a second. Like Beam's, it acknowledges what it pulled before emitting it. A
subscription that is unreachable or gone (an emulator restarting) is waited for, logged once,
instead of failing the pipeline; what the server lost meanwhile the demo's reconciliation counts.

It is installed through the runner's own evaluator-override table
(``TransformEvaluatorRegistry._test_evaluators_overrides``), by :func:`batched_pubsub_reads`
for the pipelines run inside it. It changes nothing on any other runner.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
from apache_beam.runners.direct.transform_evaluator import (
    TransformEvaluatorRegistry,
    _PubSubReadEvaluator,
)
from apache_beam.utils.timestamp import Timestamp

#: Messages per pull request (the emulator hands out at most 100 per pull whatever is asked).
MAX_MESSAGES = 1000
#: Messages per bundle: large bundles spread the runner's per-bundle cost thin.
BUNDLE_SIZE = 2000
#: Pause after an empty pull, so an idle read neither spins nor stalls the watermark.
IDLE_SECONDS = 0.1
PULL_TIMEOUT_SECONDS = 30.0

log = logging.getLogger("txpipe.lab.direct_pubsub")


def _timestamp(message, timestamp_attribute: str | None) -> Timestamp:
    """The element timestamp ReadFromPubSub gives: the attribute (RFC 3339 or epoch millis),
    else the publish time."""
    if timestamp_attribute and timestamp_attribute in message.attributes:
        value = message.attributes[timestamp_attribute]
        try:
            stamp = Timestamp(micros=int(value) * 1000)
        except ValueError:
            try:
                stamp = Timestamp.from_rfc3339(value)
            except ValueError as exc:
                raise ValueError(f"Bad timestamp value: {exc}") from exc
        if stamp.precision() > Timestamp.MICROS_PRECISION:
            stamp = stamp.to_precision(Timestamp.MICROS_PRECISION, allow_lossy_conversion=True)
        return stamp
    if message.publish_time is None:
        raise ValueError(f"No publish time present in message: {message}")
    return Timestamp.from_utc_datetime(message.publish_time)


class BatchedPubSubReadEvaluator(_PubSubReadEvaluator):
    """Beam's DirectRunner Pub/Sub evaluator with batched, non-blocking pulls."""

    max_messages = MAX_MESSAGES
    bundle_size = BUNDLE_SIZE
    idle_seconds = IDLE_SECONDS

    def _read_from_pubsub(self, timestamp_attribute):
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from google.api_core import exceptions

        client = self._get_subscriber_client(self._applied_ptransform)
        results = []
        while len(results) < self.bundle_size:
            try:
                response = client.pull(request={
                    "subscription": self._sub_name,
                    "max_messages": min(self.max_messages, self.bundle_size - len(results)),
                    # Deprecated for production subscribers, but it is what keeps an empty
                    # pull from holding the runner (and its watermark) for the whole deadline.
                    "return_immediately": True,
                }, timeout=PULL_TIMEOUT_SECONDS, retry=None)
            except _UNAVAILABLE as exc:
                _warn_once(self._sub_name, exc)
                break
            received = response.received_messages
            if not received:
                break
            for item in received:
                message = PubsubMessage._from_message(item.message)
                results.append((_timestamp(message, timestamp_attribute), message))
            try:
                client.acknowledge(request={"subscription": self._sub_name,
                                            "ack_ids": [item.ack_id for item in received]})
            except exceptions.GoogleAPICallError as exc:
                # Kept: unacknowledged messages come back, and Dedupe drops the second copy.
                _warn_once(self._sub_name, exc)
                break
        if not results:
            time.sleep(self.idle_seconds)
        return results


def _unavailable() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions

    return (exceptions.ServiceUnavailable, exceptions.NotFound, exceptions.DeadlineExceeded,
            exceptions.InternalServerError, exceptions.Unknown, exceptions.Aborted)


_UNAVAILABLE = _unavailable()
_warned: set[str] = set()


def _warn_once(subscription: str, exc: Exception) -> None:
    if subscription not in _warned:
        _warned.add(subscription)
        log.warning("Pub/Sub read from %s: %s; retrying", subscription,
                    " ".join(str(exc).split())[:200])


@contextlib.contextmanager
def batched_pubsub_reads(bundle_size: int = BUNDLE_SIZE,
                         idle_seconds: float = IDLE_SECONDS) -> Iterator[None]:
    """DirectRunner pipelines run (and running) inside read Pub/Sub in batches."""
    overrides = TransformEvaluatorRegistry._test_evaluators_overrides
    evaluator = type("BatchedPubSubRead", (BatchedPubSubReadEvaluator,),
                     {"bundle_size": bundle_size, "idle_seconds": idle_seconds})
    previous = overrides.get(_DirectReadFromPubSub)
    overrides[_DirectReadFromPubSub] = evaluator
    try:
        yield
    finally:
        if previous is None:
            overrides.pop(_DirectReadFromPubSub, None)
        else:
            overrides[_DirectReadFromPubSub] = previous


class LocalStreaming:
    """The lab's local-runner adaptation, found by the runtime through the
    ``txpipe.local_runner`` entry point (:mod:`txpipe.runners`)."""

    def applies(self, runner: str | None, source) -> bool:
        return getattr(source, "subscription", None) is not None

    def installed(self) -> contextlib.AbstractContextManager:
        return batched_pubsub_reads()

    def dedupe(self, horizon_seconds: int):
        return None  # the runtime's DropDuplicates

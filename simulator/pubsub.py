"""Publishing to Pub/Sub (or its emulator) fast, and without ever losing track of a message.

The high-level ``PublisherClient.publish`` creates a future, a lock round-trip and a proto-plus
wrapper per message, which caps a 2-core machine at roughly 20k msg/s. Here messages are packed
straight into raw protobuf ``PublishRequest``s of up to 1,000 messages (the service's limit) and
several requests are kept in flight on the client's own gRPC channel, so credentials, endpoint
and ``PUBSUB_EMULATOR_HOST`` handling stay the library's. Every request's outcome is checked:
transient errors are retried with exponential backoff, and a request that finally fails is
reported message by message.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1.types import PublishRequest, PublishResponse

from simulator.generator import SimMessage
from simulator.sinks import TargetError
from simulator.stats import Recorder

_PUBLISH = "/google.pubsub.v1.Publisher/Publish"
_Request = PublishRequest.pb()
_Response = PublishResponse.pb()

#: The codes the Pub/Sub client libraries themselves retry a publish on.
RETRYABLE = frozenset({
    grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNKNOWN,
})


@dataclass(frozen=True)
class BatchSettings:
    max_messages: int = 1000  # per request: the service rejects more
    max_bytes: int = 9_000_000  # per request, under the 10 MB limit
    max_in_flight: int = 8  # requests awaiting an answer: overlaps generation with the server


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.1
    multiplier: float = 2.0
    maximum: float = 10.0
    deadline: float = 120.0  # give up on a request this long after its first attempt
    rpc_timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so parallel retries do not stampede."""
        return random.uniform(0, min(self.maximum, self.initial * self.multiplier**attempt))


def make_client() -> pubsub_v1.PublisherClient:
    """A client for the emulator when PUBSUB_EMULATOR_HOST is set, for Google Cloud otherwise."""
    try:
        return pubsub_v1.PublisherClient()
    except auth_exceptions.GoogleAuthError:
        raise TargetError(
            "no Google Cloud credentials: set PUBSUB_EMULATOR_HOST=host:port to use the emulator, "
            "or run `gcloud auth application-default login`") from None


def _where() -> str:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return f"the Pub/Sub emulator at {host}" if host else "Pub/Sub"


def ensure_topic(client: pubsub_v1.PublisherClient, topic_path: str, *, create: bool = False) -> bool:
    """Check the topic exists (creating it when asked); True when it was created."""
    try:
        client.get_topic(request={"topic": topic_path}, timeout=15, retry=None)
        return False
    except api_exceptions.NotFound:
        if not create:
            raise TargetError(f"topic {topic_path} does not exist in {_where()}; "
                              "create it or pass --create-topic") from None
    except api_exceptions.InvalidArgument as exc:
        raise TargetError(f"invalid topic {topic_path}: {exc.message}") from None
    except (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded) as exc:
        raise TargetError(f"cannot reach {_where()}: {_one_line(exc.message)}") from None
    except api_exceptions.GoogleAPICallError as exc:
        raise TargetError(f"cannot use topic {topic_path}: {_one_line(exc.message)}") from None
    try:
        client.create_topic(request={"name": topic_path}, timeout=15, retry=None)
    except api_exceptions.AlreadyExists:
        return False  # someone else was quicker
    except api_exceptions.GoogleAPICallError as exc:
        raise TargetError(f"cannot create topic {topic_path}: {_one_line(exc.message)}") from None
    return True


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:300]


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.Call):
        return f"{error.code().name}: {_one_line(error.details())}"
    return _one_line(f"{type(error).__name__}: {error}")


@dataclass
class _InFlight:
    future: grpc.Future
    request: Any
    messages: Sequence[SimMessage]
    attempt: int
    first_sent: float


class PubSubSink:
    """Batches into raw PublishRequests; at most ``max_in_flight`` of them outstanding."""

    def __init__(self, topic_path: str, recorder: Recorder, *,
                 client: pubsub_v1.PublisherClient | None = None,
                 batching: BatchSettings | None = None, retry: RetryPolicy | None = None):
        self.topic_path = topic_path
        self._recorder = recorder
        self._batching = batching or BatchSettings()
        self._retry = retry or RetryPolicy()
        channel = (client or make_client()).transport.grpc_channel
        self._publish = channel.unary_unary(
            _PUBLISH, request_serializer=_Request.SerializeToString,
            response_deserializer=_Response.FromString)
        self._in_flight: deque[_InFlight] = deque()

    def send(self, messages: Sequence[SimMessage]) -> None:
        limit, max_bytes = self._batching.max_messages, self._batching.max_bytes
        start, size = 0, 0
        for i, message in enumerate(messages):
            # Payload plus attributes plus protobuf framing, an upper bound.
            weight = len(message.data) + sum(len(k) + len(v) + 8 for k, v in message.attributes.items()) + 8
            if i > start and (i - start >= limit or size + weight > max_bytes):
                self._submit(messages[start:i])
                start, size = i, 0
            size += weight
        if start < len(messages):
            self._submit(messages[start:])

    def _submit(self, messages: Sequence[SimMessage]) -> None:
        while len(self._in_flight) >= self._batching.max_in_flight:
            self._settle(self._in_flight.popleft())
        request = _Request(topic=self.topic_path)
        add = request.messages.add
        for message in messages:
            add(data=message.data, attributes=message.attributes)
        self._start(request, messages, 0, time.monotonic())

    def _start(self, request: Any, messages: Sequence[SimMessage], attempt: int, first: float) -> None:
        future = self._publish.future(request, timeout=self._retry.rpc_timeout)
        self._in_flight.append(_InFlight(future, request, messages, attempt, first))

    def _settle(self, item: _InFlight) -> None:
        """Wait for one request; count it delivered, retry it, or count it failed."""
        error = item.future.exception()
        if error is None:
            acknowledged = len(item.future.result().message_ids)
            if acknowledged == len(item.messages):
                self._recorder.delivered(item.messages)
            else:
                self._recorder.failed(item.messages, f"server acknowledged {acknowledged} of "
                                                     f"{len(item.messages)} messages")
            return
        code = error.code() if isinstance(error, grpc.Call) else None
        waited = time.monotonic() - item.first_sent
        if code in RETRYABLE and waited < self._retry.deadline:
            self._recorder.retried()
            time.sleep(min(self._retry.delay(item.attempt), max(0.0, self._retry.deadline - waited)))
            self._start(item.request, item.messages, item.attempt + 1, item.first_sent)
            return
        self._recorder.failed(item.messages, _describe(error))

    def poll(self) -> None:
        while self._in_flight and self._in_flight[0].future.done():
            self._settle(self._in_flight.popleft())

    def close(self) -> None:
        while self._in_flight:
            self._settle(self._in_flight.popleft())

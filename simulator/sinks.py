"""Where a stream goes. A sink reports every message it was given as delivered or failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from simulator.generator import SimMessage
from simulator.stats import Recorder


class TargetError(RuntimeError):
    """The target cannot be used (missing topic, unreachable server...); the message is one line."""


class SinkClosed(RuntimeError):
    """The reader went away (a closed pipe): stop generating, nothing more can be delivered."""


class PublishTarget(Protocol):
    def send(self, messages: Sequence[SimMessage]) -> None:
        """Hand over messages; may block to apply back-pressure."""

    def poll(self) -> None:
        """Report outcomes that are already known, without waiting."""

    def close(self) -> None:
        """Deliver or fail everything still pending, then release resources."""


class LineSink:
    """One message per line, the raw payload bytes (which may deliberately be invalid UTF-8)."""

    def __init__(self, stream: BinaryIO, recorder: Recorder, *, flush_each: bool = False):
        self._stream = stream
        self._recorder = recorder
        self._flush_each = flush_each
        self._broken = False

    def send(self, messages: Sequence[SimMessage]) -> None:
        if self._broken:
            self._recorder.failed(messages, "output closed")
            return
        try:
            self._stream.write(b"".join([m.data + b"\n" for m in messages]))
            if self._flush_each:
                self._stream.flush()
        except BrokenPipeError:
            self._broken = True
            self._recorder.failed(messages, "output closed by the reader")
            raise SinkClosed("output closed by the reader") from None
        self._recorder.delivered(messages)

    def poll(self) -> None:
        return None

    def close(self) -> None:
        if self._broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._broken = True

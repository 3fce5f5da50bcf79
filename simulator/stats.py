"""Counting what happened to every message: delivered, failed or still pending, never unknown."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.config import SimulationConfig
from simulator.generator import MessageKind, SimMessage
from simulator.truth import TruthBuilder

MAX_ERRORS = 5
_LABELS = {MessageKind.DUPLICATE.value: "duplicates"}


@dataclass
class PublishStats:
    """Running totals of one run; ``generated == published + failed`` once it has finished."""

    target: str = ""
    published: int = 0
    failed: int = 0
    generated: int = 0
    retries: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in MessageKind})
    errors: list[str] = field(default_factory=list)  # the first few distinct ones
    elapsed_s: float = 0.0
    interrupted: bool = False
    config: SimulationConfig | None = None  # with the start the run actually used
    started_at: float = field(default_factory=time.monotonic, repr=False)

    @property
    def rate_msg_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def pending(self) -> int:
        return self.generated - self.published - self.failed

    def tick(self) -> None:
        self.elapsed_s = time.monotonic() - self.started_at

    def note_error(self, error: str) -> None:
        if error not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "published": self.published, "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3), "rate_msg_s": round(self.rate_msg_s, 1),
            "generated": self.generated, "retries": self.retries, "by_kind": dict(self.by_kind),
            "interrupted": self.interrupted, "errors": list(self.errors), "target": self.target,
        }

    def summary(self) -> str:
        """One line for the end of a run."""
        kinds = ", ".join(f"{n:,} {_LABELS.get(k, k)}" for k, n in self.by_kind.items())
        noun = "message" if self.published == 1 else "messages"
        text = (f"published {self.published:,} {noun} to {self.target} in {self.elapsed_s:.2f} s "
                f"({self.rate_msg_s:,.0f} msg/s): {kinds}; {self.failed:,} failed")
        if self.retries:
            text += f"; {self.retries:,} retried requests"
        if self.interrupted:
            text += "; stopped early"
        if self.errors:
            text += f"; error: {self.errors[-1]}"
        return text


class Recorder:
    """Where sinks report outcomes; feeds the stats and, when asked for, the ground truth."""

    def __init__(self, stats: PublishStats, truth: TruthBuilder | None = None):
        self.stats = stats
        self.truth = truth

    def delivered(self, messages: Sequence[SimMessage]) -> None:
        self.stats.published += len(messages)
        by_kind = self.stats.by_kind
        for message in messages:
            by_kind[message.kind.value] += 1
        if self.truth is not None:
            self.truth.add_all(messages)

    def failed(self, messages: Sequence[SimMessage], error: str) -> None:
        self.stats.failed += len(messages)
        self.stats.note_error(error)

    def retried(self) -> None:
        self.stats.retries += 1

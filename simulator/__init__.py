"""Realistic, seeded transaction streams for txpipe: to Pub/Sub, stdout or JSON lines.

The same seed and settings always give the same bytes; faults (duplicates, every kind of bad
record, late and out-of-order events) are injected on purpose and labelled, and the ground
truth of a run says exactly what a correct pipeline must output.
"""

from simulator.config import SimulationConfig, SimulationConfigError
from simulator.generator import MessageKind, SimMessage, generate
from simulator.runner import publish, run, write
from simulator.sinks import TargetError
from simulator.stats import PublishStats
from simulator.truth import Truth, TruthBuilder, WindowTruth

__all__ = [
    "MessageKind", "PublishStats", "SimMessage", "SimulationConfig", "SimulationConfigError",
    "TargetError", "Truth", "TruthBuilder", "WindowTruth", "generate", "publish", "run", "write",
]

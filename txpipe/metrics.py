"""Beam metric names, defined once, and a reader that turns a pipeline result into a dict."""

from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from txpipe.contract import Reason

NAMESPACE = "txpipe"
READ = "messages_read"
VALID = "transactions_valid"
DEAD_LETTERED = "dead_lettered"
DUPLICATES_DROPPED = "duplicates_dropped"
UNIQUE = "transactions_unique"
PANES = "panes_emitted"


def dead_letter_counter(reason: Reason | str) -> str:
    return f"dead_letter_{Reason(reason).value}"


def read_counters(result) -> dict[str, int]:
    """Committed (or, where a runner has none, attempted) txpipe counters of a pipeline run."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        try:
            value = counter.committed
        except Exception:  # some runners only report attempted values
            value = None
        if value is None:
            value = counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals

"""Beam metric names, defined once, and a reader that turns a pipeline result into a dict."""

from __future__ import annotations

from collections.abc import Mapping

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from txpipe.contract import Reason

NAMESPACE = "txpipe"
READ = "messages_read"
VALID = "transactions_valid"
DEAD_LETTERED = "dead_lettered"
DUPLICATES_DROPPED = "duplicates_dropped"
UNIQUE = "transactions_unique"
PANES = "panes_emitted"
#: Output rows BigQuery refused, turned into dead letters (reason bigquery_rejected).
BIGQUERY_REJECTED = "bigquery_rejected"
#: Dead letters the dead-letter table itself refused: only in the workers' log, at ERROR.
DEAD_LETTERS_UNWRITTEN = "dead_letters_unwritten"
ANOMALIES = "anomalies_found"


def dead_letter_counter(reason: Reason | str) -> str:
    return f"dead_letter_{Reason(reason).value}"


class ParseCounters:
    """The parse outcome counters. Parsers tally a bundle in plain ints and flush here once:
    a Beam counter update per element would cost more than the parse itself."""

    def __init__(self):
        self._read = Metrics.counter(NAMESPACE, READ)
        self._valid = Metrics.counter(NAMESPACE, VALID)
        self._dead = Metrics.counter(NAMESPACE, DEAD_LETTERED)
        self._by_reason = {r: Metrics.counter(NAMESPACE, dead_letter_counter(r)) for r in Reason}

    def flush(self, valid: int, dead_by_reason: Mapping[Reason, int]) -> None:
        dead = sum(dead_by_reason.values())
        self._read.inc(valid + dead)
        self._valid.inc(valid)
        self._dead.inc(dead)
        for reason, n in dead_by_reason.items():
            self._by_reason[reason].inc(n)


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
    if UNIQUE in totals:  # every Dedupe counts what it keeps; what it drops is the rest
        totals[DUPLICATES_DROPPED] = max(0, totals.get(VALID, 0) - totals[UNIQUE])
    return totals

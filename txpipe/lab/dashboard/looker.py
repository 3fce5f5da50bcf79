"""Looker Studio over BigQuery: the report's data sources and charts, and the Linking API URL
that opens it on the project's dataset (docs/looker-studio.md).

Looker Studio has no report file to import: a report is built once in its editor, and the
Linking API (``https://lookerstudio.google.com/reporting/create?...``) opens a new one with
data sources configured in the URL — on a saved template (``c.reportId``) the charts come with
it. :data:`SOURCES` and :data:`CHARTS` are that report written down, so the docs and a test can
check every field a chart names against the views' columns (the views are ``txpipe setup``'s,
from :mod:`txpipe.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from txpipe.schema import ANOMALY_VIEW, DEAD_LETTER_VIEW, WINDOW_STATS

LINKING_API = "https://lookerstudio.google.com/reporting/create"
REPORT_NAME = "txpipe streaming"


@dataclass(frozen=True)
class DataSource:
    alias: str  # the Linking API's data source alias (ds0, ds1 ...)
    view: str  # the BigQuery view it reads
    name: str  # the data source's name in Looker Studio


@dataclass(frozen=True)
class Chart:
    title: str
    kind: str  # Looker Studio's chart type, as its "Add a chart" menu names it
    source: str  # a DataSource alias
    dimension: str | None  # the field on the x axis / the rows (None: a scorecard)
    metrics: tuple[tuple[str, str], ...]  # (field, its aggregation in the chart)
    breakdown: str | None = None  # a second dimension (stacks / series)
    note: str = ""


SOURCES = (
    DataSource("ds0", WINDOW_STATS.totals_view, "txpipe window totals"),
    DataSource("ds1", DEAD_LETTER_VIEW, "txpipe dead letters per minute"),
    DataSource("ds2", ANOMALY_VIEW, "txpipe windows with anomalies"),
)

CHARTS = (
    Chart("Transactions", "Scorecard", "ds0", None, (("total_transactions", "Sum"),)),
    Chart("Last pane written", "Scorecard", "ds0", None, (("last_processed_at", "Max"),),
          note="how fresh the data is"),
    Chart("Transactions per window", "Time series", "ds0", "window_start_time",
          (("total_transactions", "Sum"),), note="dimension type: Date Hour Minute"),
    Chart("Amount per window", "Time series", "ds0", "window_start_time",
          (("total_amount_sum", "Sum"),), note="exact NUMERIC sums"),
    Chart("Smallest and largest amount", "Time series", "ds0", "window_start_time",
          (("min_amount", "Min"), ("max_amount", "Max")), note="right axis on log scale"),
    Chart("Dead letters per minute by reason", "Stacked column chart", "ds1", "seen_minute",
          (("dead_letters", "Sum"),), breakdown="reason", note="dimension type: Date Hour Minute"),
    Chart("Windows with anomalies", "Table", "ds2", "window_start_time",
          (("anomalies", "Sum"), ("max_score", "Max"), ("total_transactions", "Sum")),
          breakdown="anomaly_series",
          note="filter anomalies > 0; sort by window_start_time, descending"),
)


def fields_by_source() -> dict[str, set[str]]:
    """Every field the charts name, per data source alias."""
    named: dict[str, set[str]] = {s.alias: set() for s in SOURCES}
    for chart in CHARTS:
        named[chart.source] |= {f for f in (chart.dimension, chart.breakdown) if f}
        named[chart.source] |= {field for field, _ in chart.metrics}
    return named


def report_url(project: str, dataset: str, report_id: str | None = None,
               report_name: str = REPORT_NAME) -> str:
    """The Linking API URL: a new report named ``report_name`` reading the project's views
    through the BigQuery connector — on the saved template ``report_id`` when given (its data
    sources' aliases ds0, ds1, ds2 replaced by these), else on a blank report."""
    params: list[tuple[str, str]] = []
    if report_id:
        params.append(("c.reportId", report_id))
    params.append(("r.reportName", report_name))
    for source in SOURCES:
        prefix = f"ds.{source.alias}."
        params += [(prefix + "connector", "bigQuery"), (prefix + "datasourceName", source.name),
                   (prefix + "type", "TABLE"), (prefix + "projectId", project),
                   (prefix + "datasetId", dataset), (prefix + "tableId", source.view)]
    return f"{LINKING_API}?{urlencode(params, quote_via=quote)}"


def settings_url(settings, report_id: str | None = None) -> str:
    return report_url(settings.project_id, settings.bigquery_dataset_id, report_id)

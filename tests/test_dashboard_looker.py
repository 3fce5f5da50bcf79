"""The Looker Studio report, offline: every field its charts name is a column of the view its data
source reads — in DuckDB and in the local BigQuery, both created by the project's own setup from
the one SQL — and the Linking API URL opens those views of the project's dataset."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import parse_qsl, urlsplit

import duckdb
import pytest
from conftest import unique_settings

from txpipe.lab.dashboard import looker
from txpipe.sinks.duckdb import DuckDBSink

TIME = ("TIMESTAMP",)
NUMBERS = ("BIGINT", "INTEGER", "HUGEINT", "DOUBLE", "DECIMAL", "INT64", "NUMERIC", "FLOAT64",
           "FLOAT", "BIGNUMERIC")


def _check(columns: dict[str, dict[str, str]]) -> None:
    """``columns``: view -> column -> type. Every chart's fields exist, time series run on a
    time, summed / scored metrics are numbers."""
    views = {s.alias: s.view for s in looker.SOURCES}
    for alias, fields in looker.fields_by_source().items():
        have = columns[views[alias]]
        assert fields <= set(have), (views[alias], fields - set(have))
    for chart in looker.CHARTS:
        have = columns[views[chart.source]]
        if chart.kind in ("Time series", "Stacked column chart"):
            assert have[chart.dimension].upper().startswith(TIME), chart
        for field, aggregation in chart.metrics:
            if aggregation == "Sum" or field == "max_score":
                assert have[field].upper().startswith(NUMBERS), (chart, field, have[field])


def test_the_charts_fields_are_the_duckdb_views_columns(tmp_path):
    path = str(tmp_path / "w.duckdb")
    DuckDBSink(path).check(anomalies=True)  # the tables and views, as `run` creates them
    con = duckdb.connect(path, read_only=True)
    try:
        columns = {s.view: {name: kind for name, kind, *_ in con.execute(
            f'DESCRIBE "{s.view}"').fetchall()} for s in looker.SOURCES}
    finally:
        con.close()
    _check(columns)


def test_the_charts_fields_are_the_bigquery_views_columns(bigquery_emulator):
    from txpipe.resources import bigquery_client, bigquery_steps, run_steps

    settings = unique_settings(bigquery_method="streaming_inserts")
    outcomes = dict((step.kind, outcome) for step, outcome in run_steps(
        bigquery_steps(settings, anomaly_table=True)))
    assert outcomes["dead-letter view"] == "created"
    client = bigquery_client(settings.project_id)
    dataset = f"{settings.project_id}.{settings.bigquery_dataset_id}"
    columns = {}
    for source in looker.SOURCES:
        result = client.query(f"SELECT * FROM `{dataset}.{source.view}` LIMIT 0").result()
        columns[source.view] = {f.name: f.field_type for f in result.schema}
    _check(columns)


def test_the_linking_url_opens_the_projects_views():
    url = looker.report_url("my-project", "my_dataset")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == looker.LINKING_API
    params = dict(parse_qsl(parts.query, strict_parsing=True))
    assert params.pop("r.reportName") == looker.REPORT_NAME
    for source in looker.SOURCES:
        prefix = f"ds.{source.alias}."
        assert {k.removeprefix(prefix): params.pop(k) for k in list(params)
                if k.startswith(prefix)} == {
            "connector": "bigQuery", "type": "TABLE", "projectId": "my-project",
            "datasetId": "my_dataset", "tableId": source.view, "datasourceName": source.name}
    assert params == {}  # nothing else
    with_template = dict(parse_qsl(urlsplit(looker.report_url("p", "d", "abc-123")).query))
    assert with_template["c.reportId"] == "abc-123"


@pytest.mark.subprocess
def test_the_command_prints_the_url_of_the_settings(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PROJECT_ID": "acme-analytics",
           "BIGQUERY_DATASET_ID": "sales"}
    done = subprocess.run([sys.executable, "-m", "txpipe", "dashboard", "--looker-url"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == looker.report_url("acme-analytics", "sales")

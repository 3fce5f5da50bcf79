"""Alerts as code and the windows-with-anomalies view.

- ``setup --alerts --dry-run`` renders every policy file offline, each valid for the Cloud
  Monitoring API's own message type, watching the metric it is about;
- applying is idempotent: created, then left alone, then updated when a file changes —
  against ``FakeAlertPolicyService``, a fake of Cloud Monitoring (which has no emulator), named so;
- the view's SQL (one definition, BigQuery and DuckDB) gives each window's final pane with its
  anomalies, checked on DuckDB against rows written here;
- the anomaly table through the BigQuery sink, against the BigQuery emulator.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import apache_beam as beam
import duckdb
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import unique_settings

from txpipe import resources
from txpipe.config import load_settings
from txpipe.monitoring import JOB_LABEL, POLICY_LABEL, load_policies, policy_files
from txpipe.schema import ANOMALIES, WINDOW_STATS, windows_with_anomalies_sql
from txpipe.sinks import BigQuerySink
from txpipe.sinks.identity import RunIdentity

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
WATCHED = {
    "anomalies": "anomalies_found",
    "dead_letter_rate": "dead_lettered",
    "pubsub_backlog_age": "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    "dataflow_lag": "dataflow.googleapis.com/job/data_watermark_age",
}


def test_dry_run_prints_every_policy_offline(monkeypatch, capsys):
    monkeypatch.setenv("PROJECT_ID", "acme-prod")
    monkeypatch.setenv("PUBSUB_SUBSCRIPTION_ID", "tx-sub")
    monkeypatch.setattr("socket.socket.connect", _no_network)
    assert resources.main(["--alerts", "--dry-run", "--job-name", "tx-stream",
                           "--notification-channel", "projects/acme-prod/notificationChannels/7"]
                          ) == 0
    out = capsys.readouterr().out
    assert out.count("ensure alert policy") == 4
    documents = [d for d in yaml.safe_load_all(out[out.index("--- #"):]) if d]
    assert len(documents) == len(policy_files()) == 4
    for name, metric in WATCHED.items():
        (policy,) = [d for d in documents if d["userLabels"][POLICY_LABEL] == name]
        assert policy["userLabels"][JOB_LABEL] == "tx-stream"
        assert policy["notificationChannels"] == ["projects/acme-prod/notificationChannels/7"]
        filters = " ".join(c["conditionThreshold"]["filter"] for c in policy["conditions"])
        assert metric in filters and "${" not in str(policy)
        assert ("tx-stream" in filters) or ("tx-sub" in filters)


def _no_network(sock, address):
    raise AssertionError(f"the dry run reached for the network: {address}")


class FakeAlertPolicyService:
    """A fake of Cloud Monitoring's AlertPolicyServiceClient (GCP itself cannot run here):
    keeps policies in a dict and answers as the service does — names assigned on create,
    condition names added, list filtered by user labels."""

    def __init__(self):
        self.policies = {}
        self.calls = []

    def list_alert_policies(self, request):
        wanted = dict(part.split(" = ") for part in request["filter"].split(" AND "))
        found = []
        for policy in self.policies.values():
            labels = policy.user_labels
            if all(labels.get(k.removeprefix("user_labels.")) == v.strip('"')
                   for k, v in wanted.items()):
                found.append(copy.deepcopy(policy))
        return found

    def create_alert_policy(self, request):
        policy = copy.deepcopy(request["alert_policy"])
        policy.name = f"{request['name']}/alertPolicies/{len(self.policies) + 1}"
        for i, condition in enumerate(policy.conditions):
            condition.name = f"{policy.name}/conditions/{i}"
        self.policies[policy.name] = policy
        self.calls.append("create")
        return policy

    def update_alert_policy(self, request):
        policy = copy.deepcopy(request["alert_policy"])
        assert policy.name in self.policies
        self.policies[policy.name] = policy
        self.calls.append("update")
        return policy


def test_applying_is_idempotent(tmp_path):
    from txpipe.monitoring import apply_policies

    settings = load_settings(env_file=None)
    service = FakeAlertPolicyService()
    policies = load_policies(settings, "txpipe")
    assert [o for _, o in apply_policies(policies, "p", service)] == ["created"] * 4
    assert [o for _, o in apply_policies(policies, "p", service)] == ["exists"] * 4
    # a file edited (a threshold), another job: only what differs changes
    for path in policy_files():
        text = path.read_text()
        if path.stem == "dead_letter_rate":
            text = text.replace("thresholdValue: 0.05", "thresholdValue: 0.02")
        (tmp_path / path.name).write_text(text)
    edited = load_policies(settings, "txpipe", directory=tmp_path)
    outcomes = dict((p.name, o) for p, o in apply_policies(edited, "p", service))
    assert outcomes == {"anomalies": "exists", "dataflow_lag": "exists",
                        "dead_letter_rate": "updated", "pubsub_backlog_age": "exists"}
    other = load_policies(settings, "txpipe-eu")
    assert {o for _, o in apply_policies(other, "p", service)} == {"created"}
    assert service.calls.count("create") == 8 and service.calls.count("update") == 1


def test_a_broken_policy_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.yaml").write_text("displayName: x\nconditions:\n  - nonsense: 1\n")
    monkeypatch.setattr("txpipe.monitoring.POLICY_DIR", tmp_path)
    assert resources.main(["--alerts", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad" in err and "AlertPolicy" in err


def _window(k: int, count: int, pane: int = 0, timing: str = "ON_TIME",
            run: str = "run-a") -> dict:
    start = START + timedelta(seconds=30 * k)
    return RunIdentity(run).stamp({"window_start_time": start, "window_end_time": start + timedelta(seconds=30),
            "total_transactions": count, "total_amount_sum": Decimal(count) * 10,
            "avg_transaction_amount": Decimal(10), "max_amount": Decimal(10),
            "min_amount": Decimal(10), "pane_timing": timing, "pane_index": pane,
            "processed_at": start + timedelta(seconds=31)})


def _anomaly(k: int, metric: str, score: float, dimension=None, value=None) -> dict:
    start = START + timedelta(seconds=30 * k)
    return {"window_start_time": start, "window_end_time": start + timedelta(seconds=30),
            "dimension": dimension, "dimension_value": value, "metric": metric,
            "value": Decimal(1), "score": score, "threshold": 5.0, "detector": "IQR",
            "label": "outlier", "processed_at": start + timedelta(seconds=32)}


def test_the_view_joins_final_panes_with_their_anomalies():
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(WINDOW_STATS.duckdb_ddl("windows"))
    con.execute(ANOMALIES.duckdb_ddl("anomalies"))
    windows = [_window(0, 20), _window(1, 20), _window(1, 23, 1, "LATE"), _window(2, 200),
               _window(2, 7, run="run-b")]  # another run: a row of its own, its own anomalies
    run = RunIdentity("run-a")
    anomalies = [run.stamp_anomaly(_anomaly(2, "total_transactions", 40.0)),
                 run.stamp_anomaly(_anomaly(2, "total_amount_sum", 7.5, "category", "travel"))]
    for name, schema, rows in (("windows", WINDOW_STATS, windows),
                               ("anomalies", ANOMALIES, anomalies)):
        batch = schema.to_arrow(rows)  # noqa: F841 - read by DuckDB
        con.execute(f'INSERT INTO "{name}" SELECT * FROM batch')
    view = con.execute(windows_with_anomalies_sql('"windows"', '"anomalies"')
                       + " ORDER BY window_start_time, run_id").fetchall()
    got = [(r[0], r[3], r[9], r[10], r[11], r[12]) for r in view]
    assert got == [
        ("run-a", 20, 0, 0, None, None),
        ("run-a", 23, 1, 0, None, None),  # the LATE pane (index 1) is the window's final one
        ("run-a", 200, 0, 2, 40.0, "all total_transactions, category=travel total_amount_sum"),
        ("run-b", 7, 0, 0, None, None),
    ]


def test_a_rerun_stores_each_anomaly_once(tmp_path):
    """The same run writing the same anomalies again (a rerun, a retried bundle) changes
    nothing; another run's are its own rows."""
    from txpipe.sinks import DuckDBSink

    path = str(tmp_path / "w.duckdb")
    rows = [_anomaly(2, "total_transactions", 40.0),
            _anomaly(2, "total_amount_sum", 7.5, "category", "travel")]
    for run in ("run-a", "run-a", "run-b"):
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
            _ = p | beam.Create(rows) | DuckDBSink(path).anomalies(RunIdentity(run))
    con = duckdb.connect(path, read_only=True)
    stored = con.execute("SELECT run_id, metric, score FROM anomalies "
                         "ORDER BY run_id, metric").fetchall()
    assert stored == [(run, m, s) for run in ("run-a", "run-b")
                      for m, s in (("total_amount_sum", 7.5), ("total_transactions", 40.0))]


def test_the_demo_reads_its_alerts_from_the_anomaly_table_it_writes(tmp_path):
    """BIGQUERY_ANOMALY_TABLE_ID names the warehouse's anomaly table for the sink the demo and
    ``run`` build (it once wrote the default table and read the configured one)."""
    from txpipe.config import load_settings
    from txpipe.lab.demo import read_anomalies
    from txpipe.sinks import DuckDBSink

    path = str(tmp_path / "w.duckdb")
    settings = load_settings(bigquery_anomaly_table_id="demo_anomalies")
    rows = [_anomaly(2, "total_transactions", 40.0)]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(rows) | DuckDBSink.from_settings(path, settings).anomalies(
            RunIdentity("run-a"))
    found = read_anomalies(path, settings)
    assert [(r["metric"], r["score"]) for r in found] == [("total_transactions", 40.0)]


def test_the_demos_warehouse_reads_are_empty_until_written_then_exact(tmp_path):
    """Before the pipeline writes (no file, then no tables) every read is empty; then each
    reads its own table: the stored panes, the dead letters' count."""
    from txpipe.config import load_settings
    from txpipe.lab.demo import count_dead_letters, read_anomalies, read_totals, read_windows

    path = str(tmp_path / "w.duckdb")
    settings = load_settings(bigquery_table_id="win", bigquery_dead_letter_table_id="dead")
    reads = (read_windows, read_totals, read_anomalies, count_dead_letters)
    assert [read(path, settings) for read in reads] == [[], {}, [], 0]
    duckdb.connect(path).close()
    assert [read(path, settings) for read in reads] == [[], {}, [], 0]
    con = duckdb.connect(path)
    con.execute("CREATE TABLE dead AS SELECT range AS n FROM range(3)")
    con.execute("CREATE TABLE win AS SELECT range AS pane_index FROM range(2)")
    con.close()
    assert count_dead_letters(path, settings) == 3
    assert sorted(r["pane_index"] for r in read_windows(path, settings)) == [0, 1]


def test_anomalies_reach_bigquery_with_the_schema_and_the_view(bigquery_emulator):
    from txpipe.lab.local_bigquery import emulator_clients
    from txpipe.resources import bigquery_client, bigquery_steps, run_steps

    settings = unique_settings(bigquery_method="streaming_inserts")
    client = bigquery_client(settings.project_id)
    dataset = f"{settings.project_id}.{settings.bigquery_dataset_id}"
    setup = dict((step.kind, outcome) for step, outcome in run_steps(
        bigquery_steps(settings, anomaly_table=True)))
    assert setup["anomaly table"] == setup["view"] == "created"
    again = dict((step.kind, outcome) for step, outcome in run_steps(
        bigquery_steps(settings, anomaly_table=True)))
    assert set(again.values()) == {"exists"}
    rows = [_anomaly(3, "total_transactions", 12.25),
            _anomaly(3, "total_amount_sum", 6.5, "category", "fuel"),
            _anomaly(7, "total_amount_sum", 9.0, "category", "fuel")]
    with emulator_clients(), beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(rows) | BigQuerySink.from_settings(settings).anomalies(
            RunIdentity("run-a"))
    table = f"{dataset}.{settings.bigquery_anomaly_table_id}"
    got = [dict(r.items()) for r in client.query(
        f"SELECT * FROM `{table}` ORDER BY window_start_time, metric").result()]
    assert [(r["window_start_time"], r["dimension_value"], r["metric"], r["score"]) for r in got] == [
        (START + timedelta(seconds=90), "fuel", "total_amount_sum", 6.5),
        (START + timedelta(seconds=90), None, "total_transactions", 12.25),
        (START + timedelta(seconds=210), "fuel", "total_amount_sum", 9.0)]
    meta = client.get_table(table)
    assert meta.time_partitioning.field == "window_start_time"
    assert [f.name for f in meta.schema] == list(ANOMALIES.names)
    assert {f.name: f.field_type for f in meta.schema}["score"] in ("FLOAT", "FLOAT64")

    errors = client.insert_rows_json(f"{dataset}.{settings.bigquery_table_id}",
                                     [WINDOW_STATS.to_json_row(_window(k, 20)) for k in (3, 4)])
    assert not errors
    view = list(client.query(f"SELECT * FROM `{dataset}.windows_with_anomalies` "
                             "ORDER BY window_start_time").result())
    assert [(r.window_start_time, r.anomalies, r.max_score) for r in view] == [
        (START + timedelta(seconds=90), 2, 12.25), (START + timedelta(seconds=120), 0, None)]

"""``python -m txpipe setup [--dry-run]``: create what the pipeline needs, idempotently.

Topic, subscription and dead-letter topic in Pub/Sub; dataset, window table (DAY-partitioned on
``window_start_time``, clustered), dead-letter table and the ``window_totals`` view in BigQuery,
all from the one schema in :mod:`txpipe.schema`. Existing tables are left as they are (a table
whose columns drifted from the schema is reported); a view is brought up to date. The same
code targets Google Cloud or the emulators: with ``PUBSUB_EMULATOR_HOST`` /
``BIGQUERY_EMULATOR_HOST`` (``http://HOST:PORT``) set, the clients talk to them without
credentials. :func:`check_bigquery` is the same BigQuery part, run by ``run`` before a job
starts, failing in one line.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from txpipe import monitoring
from txpipe.config import load_settings
from txpipe.dataflow import STREAMING_JOB_NAME
from txpipe.errors import OneLineParser, command
from txpipe.schema import (
    ANOMALIES,
    ANOMALY_VIEW,
    DEAD_LETTER_VIEW,
    DEAD_LETTERS,
    DIMENSION_STATS,
    WINDOW_STATS,
    dead_letters_per_minute_sql,
    dimension_table_name,
    windows_with_anomalies_sql,
)

# Google Cloud's client libraries are imported inside the functions that call a service:
# `setup --dry-run` and `run`'s file and DuckDB sinks need none of them.

TIMEOUT_SECONDS = 30.0
ACK_DEADLINE_SECONDS = 60


class ResourceError(RuntimeError):
    """A resource could not be checked or created; the message is one line."""


@dataclass(frozen=True)
class SetupStep:
    kind: str
    name: str
    ensure: Callable[[], str]  # -> "created" | "exists" | "exists (...)"

    def describe(self) -> str:
        return f"{self.kind:<16} {self.name}"


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


@contextmanager
def _pubsub_env(emulator_host: str | None) -> Iterator[None]:
    """Point the Pub/Sub clients at ``emulator_host`` while they are built (they read the env)."""
    if emulator_host is None:
        yield
        return
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


def pubsub_steps(settings, emulator_host: str | None = None) -> list[SetupStep]:
    from google.api_core.exceptions import AlreadyExists, NotFound
    from google.cloud import pubsub_v1

    with _pubsub_env(emulator_host):
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()

    def topic(path: str) -> Callable[[], str]:
        def ensure() -> str:
            try:
                publisher.get_topic(request={"topic": path}, timeout=TIMEOUT_SECONDS)
                return "exists"
            except NotFound:
                pass
            try:
                publisher.create_topic(request={"name": path}, timeout=TIMEOUT_SECONDS)
                return "created"
            except AlreadyExists:
                return "exists"
        return ensure

    def subscription() -> str:
        try:
            found = subscriber.get_subscription(
                request={"subscription": settings.subscription_path}, timeout=TIMEOUT_SECONDS)
            if found.topic != settings.topic_path:
                return f"exists (attached to {found.topic}, not {settings.topic_path})"
            return "exists"
        except NotFound:
            pass
        try:
            subscriber.create_subscription(
                request={"name": settings.subscription_path, "topic": settings.topic_path,
                         "ack_deadline_seconds": ACK_DEADLINE_SECONDS},
                timeout=TIMEOUT_SECONDS)
            return "created"
        except AlreadyExists:
            return "exists"

    steps = [
        SetupStep("topic", settings.topic_path, topic(settings.topic_path)),
        SetupStep("dead-letter topic", settings.dead_letter_topic_path,
             topic(settings.dead_letter_topic_path)),
        SetupStep("subscription", settings.subscription_path, subscription),
    ]
    if settings.alert_topic_path:
        steps.append(SetupStep("alert topic", settings.alert_topic_path,
                          topic(settings.alert_topic_path)))
    return steps


def ensure_pubsub(settings, emulator_host: str | None = None) -> list[str]:
    """Create topic, dead-letter topic and subscription if missing; names of those created."""
    steps = pubsub_steps(settings, emulator_host)
    return [step.name for step, outcome in run_steps(steps) if outcome == "created"]


def delete_pubsub(settings, emulator_host: str | None = None) -> None:
    """Remove the subscription and both topics (best effort): the demo's per-run resources."""
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import pubsub_v1

    with _pubsub_env(emulator_host):
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    calls = [
        (subscriber.delete_subscription, {"subscription": settings.subscription_path}),
        (publisher.delete_topic, {"topic": settings.topic_path}),
        (publisher.delete_topic, {"topic": settings.dead_letter_topic_path}),
    ]
    try:
        for call, request in calls:
            with suppress(GoogleAPICallError):
                call(request=request, timeout=TIMEOUT_SECONDS, retry=None)
    finally:
        publisher.transport.close()
        subscriber.close()


def bigquery_client(project: str):
    """A BigQuery client for ``project``: anonymous against BIGQUERY_EMULATOR_HOST if set."""
    from google.cloud import bigquery

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if host:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": host})
    return bigquery.Client(project=project)


def _table_resource(project: str, dataset: str, table_id: str, table, description: str) -> dict:
    return {
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table_id},
        "schema": table.bigquery_schema(),
        "description": description,
        **table.bigquery_table_options(),
    }


def bigquery_steps(settings, dimension_table: bool = False, create_dataset: bool = True,
                   quick: bool = False, client=None, anomaly_table: bool = False) -> list[SetupStep]:
    """Dataset, tables and views, each created if missing. ``quick`` (``run``'s check): no
    dataset creation unless asked, short timeouts and no retries."""
    from google.api_core.exceptions import Conflict, NotFound
    from google.cloud import bigquery

    timeout = CHECK_TIMEOUT_SECONDS if quick else TIMEOUT_SECONDS
    retry = None if quick else bigquery.DEFAULT_RETRY
    client = client or bigquery_client(settings.project_id)
    project, dataset_id = settings.project_id, settings.bigquery_dataset_id

    def dataset() -> str:
        try:
            client.get_dataset(f"{project}.{dataset_id}", timeout=timeout, retry=retry)
            return "exists"
        except NotFound:
            if not create_dataset:
                raise ResourceError(f"dataset {project}:{dataset_id} does not exist: create it "
                                    "with `python -m txpipe setup`") from None
        ds = bigquery.Dataset(f"{project}.{dataset_id}")
        ds.location = settings.region
        ds.description = "txpipe: streaming transaction statistics"
        try:
            client.create_dataset(ds, timeout=timeout)
            return "created"
        except Conflict:
            return "exists"

    def table(table_id: str, schema, description: str) -> Callable[[], str]:
        def ensure() -> str:
            ref = f"{project}.{dataset_id}.{table_id}"
            try:
                found = client.get_table(ref, timeout=timeout, retry=retry)
            except NotFound:
                found = None
            if found is not None:
                return f"exists ({drift})" if (drift := schema_drift(found, schema)) else "exists"
            resource = _table_resource(project, dataset_id, table_id, schema, description)
            try:
                client.create_table(bigquery.Table.from_api_repr(resource),
                                    timeout=timeout, retry=retry)
                return "created"
            except Conflict:
                return "exists"
        return ensure

    def view(table_id: str, schema) -> Callable[[], str]:
        return lambda: ensure_view(
            client, f"{project}.{dataset_id}.{schema.totals_view}",
            schema.totals_sql(f"`{project}.{dataset_id}.{table_id}`"),
            "per window, every run's panes added up (each stored pane read once): see "
            "docs/delivery.md, Restarts.", timeout, retry)

    steps = [
        SetupStep("dataset", f"{project}:{dataset_id}", dataset),
        SetupStep("window table", settings.bigquery_table,
             table(settings.bigquery_table_id, WINDOW_STATS, "one row per window pane")),
        SetupStep("dead-letter table", settings.bigquery_dead_letter_table,
             table(settings.bigquery_dead_letter_table_id, DEAD_LETTERS,
                   "messages that broke the contract, with the reason")),
        SetupStep("totals view", f"{project}:{dataset_id}.{WINDOW_STATS.totals_view}",
             view(settings.bigquery_table_id, WINDOW_STATS)),
        SetupStep("dead-letter view", f"{project}:{dataset_id}.{DEAD_LETTER_VIEW}", lambda: ensure_view(
            client, f"{project}.{dataset_id}.{DEAD_LETTER_VIEW}", dead_letters_per_minute_sql(
                f"`{project}.{dataset_id}.{settings.bigquery_dead_letter_table_id}`", "bigquery"),
            "dead letters per minute and reason (Looker Studio).", timeout, retry)),
    ]
    if dimension_table:
        name = dimension_table_name(settings.bigquery_table_id)
        steps.append(SetupStep("dimension table", f"{project}:{dataset_id}.{name}",
                          table(name, DIMENSION_STATS, "window statistics per dimension value")))
        steps.append(SetupStep("totals view", f"{project}:{dataset_id}.{DIMENSION_STATS.totals_view}",
                          view(name, DIMENSION_STATS)))
    if anomaly_table:
        steps += _anomaly_steps(settings, client, table, timeout, retry)
    return steps


def ensure_view(client, ref: str, query: str, about: str, timeout, retry) -> str:
    """Create the view ``ref`` or bring its query up to date. Its description carries the
    query's digest (servers may store the SQL reformatted), which says whether it changed."""
    from google.api_core.exceptions import Conflict, NotFound
    from google.cloud import bigquery

    description = f"{about} txpipe {hashlib.sha256(query.encode()).hexdigest()[:12]}"
    try:
        found = client.get_table(ref, timeout=timeout, retry=retry)
    except NotFound:
        found = None
    if found is not None:
        if found.description == description:
            return "exists"
        found.view_query, found.description = query, description
        client.update_table(found, ["view_query", "description"], timeout=timeout, retry=retry)
        return "updated"
    created = bigquery.Table(ref)
    created.view_query, created.description = query, description
    try:
        client.create_table(created, timeout=timeout, retry=retry)
        return "created"
    except Conflict:
        return "exists"


_LEGACY_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}


def schema_drift(found, table) -> str | None:
    """How an existing BigQuery table differs from ``table`` in a way the sink's rows would
    not fit (missing columns, other types), or None."""
    have = {f.name: _LEGACY_TYPES.get(f.field_type, f.field_type) for f in found.schema}
    missing = [c.name for c in table.columns if c.name not in have]
    if missing:
        return f"missing columns: {', '.join(missing)}"
    other = [f"{c.name} {have[c.name]}, not {_LEGACY_TYPES.get(c.kind.value, c.kind.value)}"
             for c in table.columns
             if have[c.name] != _LEGACY_TYPES.get(c.kind.value, c.kind.value)]
    return f"other column types: {'; '.join(other)}" if other else None


#: How long ``run``'s check waits for each BigQuery call.
CHECK_TIMEOUT_SECONDS = 15.0


def check_bigquery(settings, dimension_table: bool = False, anomaly_table: bool = False) -> None:
    """Before a run writes to BigQuery: credentials, the dataset (which it does not create),
    and the tables and views of :func:`bigquery_steps`, created where missing — which also
    proves the dataset writable. Raises ResourceError with one line."""
    if not os.environ.get("BIGQUERY_EMULATOR_HOST"):
        import google.auth
        from google.auth.exceptions import GoogleAuthError

        try:
            google.auth.default()
        except GoogleAuthError:
            raise ResourceError(
                "BigQuery: no Google Cloud credentials (run `gcloud auth application-default "
                "login`, or set BIGQUERY_EMULATOR_HOST=http://HOST:PORT for a local BigQuery)"
            ) from None
    try:
        client = bigquery_client(settings.project_id)
    except Exception as exc:
        raise ResourceError(f"BigQuery: {_one_line(exc)}") from None
    steps = bigquery_steps(settings, dimension_table, create_dataset=False, quick=True,
                           client=client, anomaly_table=anomaly_table)
    for step, outcome in run_steps(steps):
        if outcome.startswith("exists ("):
            raise ResourceError(
                f"{step.kind} {step.name} does not fit txpipe's rows "
                f"{outcome.removeprefix('exists ')}: created by an older txpipe or by hand? "
                "See docs/delivery.md (Restarts)")


def _anomaly_steps(settings, client, table, timeout, retry) -> list[SetupStep]:
    """The anomaly table and, for Looker Studio, the view of each window with its anomalies."""
    project, dataset_id = settings.project_id, settings.bigquery_dataset_id
    view_ref = f"{project}.{dataset_id}.{ANOMALY_VIEW}"

    def view() -> str:
        return ensure_view(
            client, view_ref, windows_with_anomalies_sql(
                f"`{project}.{dataset_id}.{settings.bigquery_table_id}`",
                f"`{project}.{dataset_id}.{settings.bigquery_anomaly_table_id}`"),
            "each run's windows (final pane) with the anomalies found in them.", timeout, retry)

    return [
        SetupStep("anomaly table", settings.bigquery_anomaly_table,
             table(settings.bigquery_anomaly_table_id, ANOMALIES, "anomalies found in the "
                   "window statistics (run --anomalies)")),
        SetupStep("view", f"{project}:{dataset_id}.{ANOMALY_VIEW}", view),
    ]


def run_steps(steps: list[SetupStep]) -> Iterator[tuple[SetupStep, str]]:
    """Ensure each resource in order, yielding (step, outcome); stop at the first failure."""
    for step in steps:
        try:
            outcome = step.ensure()
        except ResourceError:
            raise
        except Exception as exc:  # API, transport and credential errors alike become one line
            raise ResourceError(f"{step.kind} {step.name}: {_one_line(exc)}") from None
        yield step, outcome


def targets() -> str:
    pubsub = os.environ.get("PUBSUB_EMULATOR_HOST")
    bq = os.environ.get("BIGQUERY_EMULATOR_HOST")
    return (f"Pub/Sub: {'emulator ' + pubsub if pubsub else 'Google Cloud'}; "
            f"BigQuery: {'emulator ' + bq if bq else 'Google Cloud'}")


PUBSUB_KINDS = ("topic", "dead-letter topic", "subscription", "alert topic")


def plan(settings, dimension_table: bool = False,
         anomaly_table: bool = False) -> list[tuple[str, str]]:
    """(kind, name) of every resource, without contacting anything: the dry run."""
    return [
        ("topic", settings.topic_path),
        ("dead-letter topic", settings.dead_letter_topic_path),
        ("subscription", f"{settings.subscription_path} (on {settings.pubsub_topic_id}, "
                         f"ack deadline {ACK_DEADLINE_SECONDS} s)"),
    ] + ([("alert topic", settings.alert_topic_path)] if settings.alert_topic_path else []) + [
        ("dataset", f"{settings.project_id}:{settings.bigquery_dataset_id} "
                    f"(location {settings.region})"),
        ("window table", f"{settings.bigquery_table} (DAY partitions on window_start_time, "
                         "clustered by window_start_time)"),
        ("dead-letter table", f"{settings.bigquery_dead_letter_table} (DAY partitions on "
                              "seen_at, clustered by reason)"),
        ("totals view", f"{settings.project_id}:{settings.bigquery_dataset_id}."
                        f"{WINDOW_STATS.totals_view} (each run's panes per window, added up)"),
        ("dead-letter view", f"{settings.project_id}:{settings.bigquery_dataset_id}.{DEAD_LETTER_VIEW} "
                 "(dead letters per minute and reason, for Looker Studio)"),
    ] + ([("dimension table", dimension_table_name(settings.bigquery_table)),
          ("totals view", f"{settings.project_id}:{settings.bigquery_dataset_id}."
                          f"{DIMENSION_STATS.totals_view}")]
         if dimension_table else []) + ([
        ("anomaly table", f"{settings.bigquery_anomaly_table} (DAY partitions on "
                          "window_start_time, clustered by metric, dimension)"),
        ("view", f"{settings.project_id}:{settings.bigquery_dataset_id}.{ANOMALY_VIEW} (each "
                 "run's windows joined with their anomalies, for Looker Studio)"),
    ] if anomaly_table else [])


@command("txpipe setup")
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m txpipe setup",
        description="Create the Pub/Sub topics and subscription and the BigQuery dataset and "
                    "tables the pipeline needs (idempotent). Honours PUBSUB_EMULATOR_HOST and "
                    "BIGQUERY_EMULATOR_HOST.")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    parser.add_argument("--dimension-table", action="store_true",
                        help="also create TABLE_by_dimension (for `run --breakdown`)")
    parser.add_argument("--anomaly-table", action="store_true",
                        help="also create the anomaly table and the windows_with_anomalies view "
                             "(for `run --anomalies`)")
    parser.add_argument("--skip-pubsub", action="store_true", help="BigQuery resources only")
    parser.add_argument("--skip-bigquery", action="store_true", help="Pub/Sub resources only")
    parser.add_argument("--alerts", action="store_true",
                        help="also apply the Cloud Monitoring alert policies of txpipe/alerts/")
    parser.add_argument("--job-name", default=None, metavar="NAME",
                        help="--alerts: the Dataflow job they watch (default: txpipe)")
    parser.add_argument("--notification-channel", action="append", default=[], metavar="NAME",
                        help="--alerts: projects/P/notificationChannels/ID to notify (repeatable)")
    args = parser.parse_args(argv)
    settings = load_settings()  # a bad setting is a ConfigError: one line, exit 2
    rows = plan(settings, args.dimension_table, args.anomaly_table)
    if args.skip_pubsub:
        rows = [r for r in rows if r[0] not in PUBSUB_KINDS]
    if args.skip_bigquery:
        rows = [r for r in rows if r[0] in PUBSUB_KINDS]
    policies = []
    if args.alerts:
        try:
            policies = monitoring.load_policies(settings, args.job_name or STREAMING_JOB_NAME,
                                                args.notification_channel)
        except monitoring.PolicyError as exc:
            print(f"txpipe setup: alert policy {exc}", file=sys.stderr)
            return 2
    if args.dry_run:
        print(f"plan ({targets()}):")
        for kind, name in rows:
            print(f"  ensure {kind:<17} {name}")
        for policy in policies:
            print(f"  ensure {'alert policy':<17} {policy.display_name} ({policy.name}.yaml)")
        if policies:
            monitoring.print_policies(policies)
        return 0
    steps: list[SetupStep] = []
    try:
        if not args.skip_pubsub:
            steps += pubsub_steps(settings)
        if not args.skip_bigquery:
            steps += bigquery_steps(settings, args.dimension_table,
                                    anomaly_table=args.anomaly_table)
        print(f"setup ({targets()}):")
        for step, outcome in run_steps(steps):
            print(f"  {step.kind:<17} {step.name}: {outcome}")
        if policies:
            for policy, outcome in monitoring.apply_policies(policies, settings.project_id):
                print(f"  {'alert policy':<17} {policy.display_name}: {outcome}")
    except ResourceError as exc:
        print(f"txpipe setup: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # client construction: missing credentials, bad endpoint
        print(f"txpipe setup: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

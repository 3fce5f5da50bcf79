"""Alerts as code: the Cloud Monitoring alert policies an operator of txpipe must hear about.

The policies are files, ``txpipe/alerts/*.yaml``, in the REST form of an ``AlertPolicy``
(what ``gcloud monitoring policies create --policy-from-file`` also reads), with
``${PROJECT_ID}``, ``${JOB_NAME}``, ``${SUBSCRIPTION_ID}`` and table names filled in from the
settings. ``python -m txpipe setup --alerts`` applies them idempotently: each carries the user
label ``txpipe_policy`` (its file name) and ``txpipe_job``; a policy found with those labels is
left alone when it matches the file, updated when it does not, created when missing.
``--dry-run`` renders and validates them (against the API's own message types) offline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

POLICY_DIR = Path(__file__).with_name("alerts")
POLICY_LABEL = "txpipe_policy"
JOB_LABEL = "txpipe_job"


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a policy's documentation) as a readable ``|`` block."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


class PolicyError(ValueError):
    """A policy file is not a valid alert policy; the message is one line."""


@dataclass(frozen=True)
class Policy:
    name: str  # the file's stem: anomalies, dead_letter_rate ...
    body: dict[str, Any]  # the REST representation

    @property
    def display_name(self) -> str:
        return self.body["displayName"]

    def to_proto(self):
        from google.cloud import monitoring_v3

        try:
            return monitoring_v3.AlertPolicy.from_json(json.dumps(self.body))
        except Exception as exc:  # unknown field, bad enum or duration: the API would refuse it
            raise PolicyError(f"{self.name}: not an AlertPolicy: "
                              f"{' '.join(str(exc).split())[:200]}") from None

    def to_yaml(self) -> str:
        return yaml.dump(self.body, Dumper=_Dumper, sort_keys=False, width=100)


def policy_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or POLICY_DIR).glob("*.yaml"))


def load_policies(settings, job_name: str, channels: Iterable[str] = (),
                  directory: Path | None = None) -> list[Policy]:
    """Every policy file, rendered for ``settings`` and the Dataflow job ``job_name``."""
    values = {
        "PROJECT_ID": settings.project_id,
        "JOB_NAME": job_name,
        "SUBSCRIPTION_ID": settings.pubsub_subscription_id,
        "ANOMALY_TABLE": settings.bigquery_anomaly_table,
        "DEAD_LETTER_TABLE": settings.bigquery_dead_letter_table,
    }
    policies = []
    for path in policy_files(directory):
        try:
            body = yaml.safe_load(Template(path.read_text()).substitute(values))
        except (KeyError, ValueError, yaml.YAMLError) as exc:
            raise PolicyError(f"{path.name}: {' '.join(str(exc).split())[:200]}") from None
        body.setdefault("userLabels", {}).update({POLICY_LABEL: path.stem, JOB_LABEL: job_name})
        if channels:
            body["notificationChannels"] = list(channels)
        policy = Policy(path.stem, body)
        policy.to_proto()  # validate now, offline
        policies.append(policy)
    return policies


def _managed(proto, fields: Iterable[str]) -> dict[str, Any]:
    """The top-level ``fields`` a file sets, as the API spells them, without default values
    or what the service adds (condition names, creation records)."""
    found = json.loads(type(proto).to_json(proto, always_print_fields_with_no_presence=False))
    out = {k: found.get(k) for k in fields}
    for condition in out.get("conditions") or ():
        condition.pop("name", None)
    return out


def apply_policies(policies: list[Policy], project_id: str,
                   client: Any = None) -> Iterator[tuple[Policy, str]]:
    """Create or update each policy; yields (policy, "created" | "updated" | "exists").

    ``client`` is a ``monitoring_v3.AlertPolicyServiceClient`` (made here when None)."""
    if client is None:
        from google.cloud import monitoring_v3

        client = monitoring_v3.AlertPolicyServiceClient()
    parent = f"projects/{project_id}"
    for policy in policies:
        job = policy.body["userLabels"][JOB_LABEL]
        found = list(client.list_alert_policies(request={
            "name": parent,
            "filter": f'user_labels.{POLICY_LABEL} = "{policy.name}" AND '
                      f'user_labels.{JOB_LABEL} = "{job}"'}))
        desired = policy.to_proto()
        if not found:
            client.create_alert_policy(request={"name": parent, "alert_policy": desired})
            yield policy, "created"
            continue
        existing = found[0]
        if _managed(existing, policy.body) == _managed(desired, policy.body):
            yield policy, "exists"
            continue
        desired.name = existing.name
        client.update_alert_policy(request={"alert_policy": desired})
        yield policy, "updated"


def print_policies(policies: list[Policy], say: Callable[[str], None] = print) -> None:
    for policy in policies:
        say(f"--- # {policy.name}: {policy.display_name}")
        say(policy.to_yaml().rstrip())

"""Beam's BigQuery writer pointed at a local BigQuery (``BIGQUERY_EMULATOR_HOST``).

``WriteToBigQuery`` has no endpoint option. Its two clients — the apitools one (tables, load
jobs) and google-cloud-bigquery's (``insertAll``) — are built by ``BigQueryWrapper``; without
credentials the first one starts an interactive OAuth flow that never returns. Inside
:func:`emulator_clients`, every wrapper a pipeline builds gets both clients on the emulator,
with anonymous credentials. It patches this process only, so it serves in-process runners
(the DirectRunner's default mode), never Dataflow workers; the runtime finds it with its one
guarded import of the lab when ``run`` writes to BigQuery locally
(txpipe.runners.local_bigquery).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

ENV = "BIGQUERY_EMULATOR_HOST"


def apitools_client(endpoint: str):
    """Beam's apitools BigQuery client on ``endpoint`` (``http://HOST:PORT``), no credentials."""
    from apache_beam.internal.http_client import get_new_http
    from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api

    return bigquery_api.BigqueryV2(url=endpoint.rstrip("/") + "/bigquery/v2/",
                                   get_credentials=False, http=get_new_http(),
                                   response_encoding="utf8")


def cloud_client(endpoint: str, project: str = "emulator"):
    """google-cloud-bigquery's client on ``endpoint``; insert calls name their own project."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": endpoint})


@contextlib.contextmanager
def emulator_clients(endpoint: str | None = None,
                     cloud: Callable[[str], Any] = cloud_client) -> Iterator[None]:
    """Beam BigQuery wrappers built inside use the emulator at ``endpoint`` (default: the
    environment's). ``cloud`` builds the insertAll client (tests put a stand-in there)."""
    from apache_beam.io.gcp.bigquery_tools import BigQueryWrapper

    endpoint = endpoint or os.environ[ENV]
    original = BigQueryWrapper.__init__

    def init(self, client=None, temp_dataset_id=None, temp_table_ref=None):
        if client is not None:  # Beam's own test client: leave it alone
            original(self, client, temp_dataset_id, temp_table_ref)
            return
        original(self, apitools_client(endpoint), temp_dataset_id, temp_table_ref)
        self.gcp_bq_client = cloud(endpoint)

    BigQueryWrapper.__init__ = init
    try:
        yield
    finally:
        BigQueryWrapper.__init__ = original


class LocalBigQuery:
    """The lab's wiring for ``run --sink bigquery`` on a local runner (txpipe.runners)."""

    def applies(self) -> bool:
        return bool(os.environ.get(ENV))

    def installed(self) -> contextlib.AbstractContextManager:
        return emulator_clients()

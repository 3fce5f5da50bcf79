"""The lab: everything that helps people run, learn and measure txpipe on one machine — the
local stack (Pub/Sub and BigQuery emulators), the end-to-end demo, the DirectRunner's local
Pub/Sub read, the notebook helpers.

Installed with ``pip install "txpipe[lab]"``. The runtime (what Dataflow workers install and
run) imports nothing of it but the local-runner adaptations, by name through
:func:`adaptation`, with one guarded import (txpipe.runners) when a pipeline runs locally.
"""

from __future__ import annotations

import importlib
from typing import Any

_ADAPTATIONS = {
    "LocalStreaming": "txpipe.lab.direct_pubsub",  # local Pub/Sub read, dedupe, drain
    "LocalBigQuery": "txpipe.lab.local_bigquery",  # Beam's BigQuery clients to a local one
    "fn_api_runner": "txpipe.lab.fn_api",  # the FnApiRunner named, with the options
}


def adaptation(name: str) -> Any:
    """A local-runner adaptation, its module loaded only when it is asked for."""
    return getattr(importlib.import_module(_ADAPTATIONS[name]), name)

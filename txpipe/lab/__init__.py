"""The lab: everything that helps people run, learn and measure txpipe on one machine — the
local stack (Pub/Sub and BigQuery emulators), the end-to-end demo, the DirectRunner's local
Pub/Sub read, the notebook helpers.

Installed with ``pip install "txpipe[lab]"``. The runtime (what Dataflow workers install and
run) imports nothing of it but the local-runner adaptations, with one guarded import
(txpipe.runners) when a pipeline runs on a local runner.
"""

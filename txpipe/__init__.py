"""txpipe: event-time streaming transaction analytics with Apache Beam.

Validate JSON transactions (bad ones become dead letters), drop duplicates, window them in
event time and aggregate count / sum / avg / min / max exactly, into BigQuery or DuckDB.
"""

__version__ = "0.1.0"

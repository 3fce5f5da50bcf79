"""``python -m txpipe run`` (Pub/Sub -> DuckDB) killed with SIGKILL mid-stream and restarted on
the same subscription and warehouse loses nothing and counts nothing twice.

The publisher is not the simulator: the official ``google-cloud-pubsub`` PublisherClient sends
messages in a spelling of its own (shuffled keys, RFC 3339 offsets, optional fields), and its
record of what the service acknowledged is recounted per window with pandas and Decimal — the
independent expectation the warehouse's ``window_totals`` view must equal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pytest
from conftest import unique_settings
from google.cloud import pubsub_v1
from recount import Tx, recount_fixed_windows, spell_message

from txpipe.contract import ATTR_EVENT_TS
from txpipe.lab import progress

WINDOW = 5
#: The subscription's ack deadline: what a killed run's leases last at most, and so how long
#: the restarted run holds its watermark.
ACK_DEADLINE = 10
RATE = 100  # messages per second


class _Publisher:
    """The official client publishing foreign-spelled live transactions until stopped; its
    record holds every transaction whose publish the service acknowledged."""

    def __init__(self, topic: str):
        self.topic = topic
        self.record: list[Tx] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = pubsub_v1.PublisherClient()
        rng = random.Random(20)
        n = 0
        while not self.stop.is_set():
            futures = []
            for _ in range(RATE // 10):
                now = datetime.now(UTC)
                tx = Tx(f"k9-{n:06d}", Decimal(rng.randint(1, 99_999)) / 100, now)
                n += 1
                stamp = now.isoformat(timespec="microseconds")  # +00:00, not Z
                futures.append((tx, client.publish(self.topic, spell_message(tx, rng),
                                                   **{ATTR_EVENT_TS: stamp})))
            for tx, future in futures:
                future.result(timeout=30)
                with self._lock:
                    self.record.append(tx)
            time.sleep(0.1)

    def published(self) -> list[Tx]:
        with self._lock:
            return list(self.record)


def _run(settings, warehouse: str) -> subprocess.Popen:
    env = {**os.environ, "PROJECT_ID": settings.project_id,
           "PUBSUB_TOPIC_ID": settings.pubsub_topic_id,
           "PUBSUB_SUBSCRIPTION_ID": settings.pubsub_subscription_id,
           "WINDOW_SIZE_SECONDS": str(WINDOW), "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "txpipe", "run", "--source", "pubsub",
                             "--sink", "duckdb", "--output", warehouse], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(warehouse: str, sql: str) -> list[dict]:
    con = duckdb.connect(warehouse, read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def _wait_for_rows(warehouse: str, table: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if os.path.exists(warehouse):
            try:
                rows = _rows(warehouse, f'SELECT * FROM "{table}"')
            except duckdb.Error:  # the writer holds the file this instant, or no table yet
                continue
            if rows:
                return rows
    raise AssertionError("the first run wrote no window in time")


@pytest.mark.subprocess
@pytest.mark.timeout(300)
def test_kill_9_and_restart_lose_nothing_and_double_nothing(pubsub_emulator, tmp_path):
    settings = unique_settings(window_size_seconds=WINDOW)
    pubsub_emulator.ensure_resources(settings)
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.delete_subscription(request={"subscription": settings.subscription_path})
    subscriber.create_subscription(request={
        "name": settings.subscription_path, "topic": settings.topic_path,
        "ack_deadline_seconds": ACK_DEADLINE})
    warehouse = str(tmp_path / "w.duckdb")
    publisher = _Publisher(settings.topic_path)
    first = _run(settings, warehouse)
    second = None
    try:
        publisher.thread.start()
        # killed once windows are written, with later ones open and messages in flight
        _wait_for_rows(warehouse, settings.bigquery_table_id, 120)
        time.sleep(2)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        before = _rows(warehouse, "SELECT sum(total_transactions) AS n FROM window_totals")[0]["n"]
        sent_by_kill = len(publisher.published())
        assert 0 < before < sent_by_kill  # mid-stream: some counted, some not yet

        second = _run(settings, warehouse)
        time.sleep(ACK_DEADLINE + 12)  # the redeliveries come back; fresh traffic goes on
        publisher.stop.set()
        publisher.thread.join(30)
        time.sleep(WINDOW + 2)  # the restarted run reads what is left
        second.send_signal(signal.SIGINT)  # drain: every open window fires and is written
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-3000:]
    finally:
        publisher.stop.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()

    published = publisher.published()
    assert len(published) > sent_by_kill
    expected = recount_fixed_windows(published, WINDOW)
    totals = {r["window_start_time"].replace(tzinfo=UTC): (r["total_transactions"],
                                                          Decimal(r["total_amount_sum"]))
              for r in _rows(warehouse, "SELECT * FROM window_totals")}
    want = {start.to_pydatetime(): (int(row.total_transactions), row.total_amount_sum)
            for start, row in expected.iterrows()}
    assert sum(n for n, _ in totals.values()) == len(published)  # nothing lost, nothing twice
    assert totals == want
    runs = _rows(warehouse, f'SELECT DISTINCT run_id FROM "{settings.bigquery_table_id}"')
    assert len(runs) == 2  # both runs wrote windows
    record = progress.read(warehouse)  # what the dashboard reads of the run beside the warehouse
    assert record is not None and record.draining and 0 < record.pulled <= len(published)
    # nothing left in the subscription: the restarted run acknowledged what it wrote
    leftover = subscriber.pull(request={"subscription": settings.subscription_path,
                                        "max_messages": 100, "return_immediately": True})
    assert not leftover.received_messages

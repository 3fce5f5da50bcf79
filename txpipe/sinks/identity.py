"""Row identity across runs: which run wrote a row, and which dead letter a row is.

A **run** is one pass of the pipeline over its input. Its id is part of every row's key
(txpipe.schema), so runs never overwrite each other and a write of a key already stored — a
retried bundle, a rerun — changes nothing:

- a **replay** (files, in-memory messages) is identified by what it reads and how it counts:
  the content of its input (not file names: a moved copy is the same replay) and the settings
  that shape its rows. Running the same replay again is the same run, so it rewrites the same
  keys; a kill -9 and a rerun complete the run instead of starting another.
- a **streaming job** draws its id once, when it is built (``stream-<UTC start>-<random>``): a
  restarted job numbers its panes from 0 again, under another run id. ``--update`` keeps the
  job's state and must keep its run id too (``--run-id``, see txpipe.cli).

Every run's panes per window add up in the totals view (``window_totals``), exact as long as
no two runs counted the same transaction (see docs/delivery.md, Restarts).

**Anomalies** are keyed by ``anomaly_id`` = hash(run, window, series, metric, detector).

**Dead letters** have no key of their own: each gets ``dead_letter_id`` = hash(run, reason,
payload, occurrence), where occurrence numbers identical payloads within the run (two copies
of one bad message are two dead letters; a rerun numbers them the same way).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.typehints import KV

from txpipe.parse import stamped
from txpipe.sources import FileSource, MessagesSource
from txpipe.windowing import WindowSpec

#: Bumped if what goes into a derived run id changes, so old and new ids never collide.
_DERIVATION = "txpipe-run-v1"
_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class RunIdentity:
    """What a sink stamps on the rows it writes: the run and how its panes add up."""

    run_id: str
    accumulation: str = "accumulating"

    def stamp(self, row: dict) -> dict:
        """A statistics row with its run (schema.WINDOW_STATS / DIMENSION_STATS)."""
        return {**row, "run_id": self.run_id, "accumulation": self.accumulation}

    def stamp_anomaly(self, row: dict) -> dict:
        """An anomaly row (schema.ANOMALIES) with its run and its identity in the run."""
        return {**row, "run_id": self.run_id, "anomaly_id": anomaly_id(self.run_id, row)}

    @classmethod
    def for_run(cls, settings, source=None, breakdown: str | None = None) -> RunIdentity:
        """``settings.run_id`` if given, else derived from a replay's input, else drawn."""
        run_id = settings.run_id or derive_run_id(source, settings, breakdown) or draw_run_id()
        return cls(run_id, settings.accumulation.value)


def draw_run_id() -> str:
    """A streaming job's id: when it started (sortable, readable) and 32 random bits."""
    return f"stream-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


def derive_run_id(source, settings, breakdown: str | None = None) -> str | None:
    """A replay's id from its input and counting settings; None for a source that is not a
    replay (Pub/Sub, a test stream)."""
    if isinstance(source, FileSource):
        prints = file_fingerprints(source.pattern)
    elif isinstance(source, MessagesSource):
        prints = sorted(_digest(m if isinstance(m, bytes) else str(m).encode())
                        for m in source.messages)
    else:
        return None
    digest = hashlib.sha256()
    for part in (_DERIVATION, counting_settings(settings, breakdown), *prints):
        digest.update(part.encode())
        digest.update(b"\n")
    return f"replay-{digest.hexdigest()[:16]}"


def counting_settings(settings, breakdown: str | None) -> str:
    """The settings that decide what a replay's rows say (not where they go)."""
    return f"{WindowSpec.from_settings(settings)!r} dedupe={settings.dedupe_horizon_seconds} " \
           f"breakdown={breakdown}"


def file_fingerprints(pattern: str) -> list[str]:
    """The content of every file ``pattern`` matches, as sorted digests: a local file's
    SHA-256 (≈0.7 GB/s here), a remote one's size and the checksum its store keeps (no
    download)."""
    prints = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        if "://" not in meta.path or meta.path.startswith("file://"):
            prints.append(_file_digest(meta.path))
        else:
            prints.append(f"{meta.size_in_bytes}:{FileSystems.checksum(meta.path)}")
    return sorted(prints)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path.removeprefix("file://"), "rb") as f:
        while block := f.read(_READ_BYTES):
            digest.update(block)
    return f"{os.path.getsize(path.removeprefix('file://'))}:{digest.hexdigest()}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(run_id: str, row: dict) -> str:
    """Which dead letters are copies of each other within a run."""
    return _digest(f"{run_id}\x00{row['reason']}\x00{row['payload']}".encode())


def anomaly_id(run_id: str, row: dict) -> str:
    """The run, the window, the series (dimension and value), the metric and the detector."""
    start, end = row["window_start_time"], row["window_end_time"]
    parts = (run_id, start.isoformat(), end.isoformat(), row.get("dimension") or "",
             row.get("dimension_value") or "", row["metric"], row["detector"])
    return _digest("\x1f".join(parts).encode())


def dead_letter_id(key: str, occurrence: int) -> str:
    return _digest(f"{key}\x00{occurrence}".encode())[:32]


class _NumberCopiesFn(beam.DoFn):
    """A stream's n-th dead letter with this content gets occurrence n.

    Keyed state: on Dataflow the count is committed with the output, so a retried bundle
    numbers the same way. One small count per distinct bad payload is kept for the job's life.
    """

    COPIES = ReadModifyWriteStateSpec("copies", VarIntCoder())

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, element, copies=beam.DoFn.StateParam(COPIES)):
        key, row = element
        seen = copies.read() or 0
        copies.write(seen + 1)
        yield {**row, "run_id": self._run_id, "dead_letter_id": dead_letter_id(key, seen)}


def _number_group(element, run_id: str):
    """A replay's copies of one dead letter, all at hand: numbered 0, 1, ... (identical rows,
    so any order gives the same ids), each stamped again with when it was seen — the grouping
    stamped them with the end of the global window, which no per-minute file can name."""
    key, rows = element
    for occurrence, row in enumerate(rows):
        yield stamped({**row, "run_id": run_id, "dead_letter_id": dead_letter_id(key, occurrence)})


class IdentifyDeadLetters(beam.PTransform):
    """Dead letters -> the same rows with ``run_id`` and a ``dead_letter_id`` that a rerun or a
    retry gives again (schema.DEAD_LETTERS).

    A bounded input groups the copies (a shuffle); a stream counts them in keyed state. Both
    number the n-th copy n. (Keyed state in batch costs the DirectRunner a state round trip per
    element: 36 s for 8,000 dead letters, where the grouping takes well under one.)
    """

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def expand(self, dead_letters):
        run_id = self.run_id
        keyed = dead_letters | "KeyByContent" >> beam.Map(
            lambda row: (content_key(run_id, row), row)).with_output_types(KV[str, Any])
        if dead_letters.is_bounded:
            return (keyed
                    | "GroupCopies" >> beam.GroupByKey()
                    | "NumberCopies" >> beam.FlatMap(_number_group, run_id))
        # a str key: deterministic, as keyed state needs
        return keyed | "NumberCopies" >> beam.ParDo(_NumberCopiesFn(run_id))

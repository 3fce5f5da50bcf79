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
import pickle
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import zstandard
from apache_beam.coders import VarIntCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.typehints import KV

from txpipe.contract import from_micros, to_micros
from txpipe.parse import stamped
from txpipe.sources import FileSource, MessagesSource
from txpipe.windowing import WindowSpec, in_global_window

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


#: Shuffle keys a replay's dead letters are spread over (all copies of one share a key).
DEAD_LETTER_BUCKETS = 64


class _PackCopiesFn(beam.DoFn):
    """A bundle's dead letters -> ``(bucket, packed)`` per bucket of their payloads: the
    grouping then moves one compressed list per bucket and bundle instead of a row dict (pickled
    for its datetime) per dead letter — a tenth of the memory, a fraction of the time."""

    #: Dead letters held before a bundle's lists are sent on: memory bound.
    MAX_HELD = 10_000

    def start_bundle(self):
        self._held: dict[int, list] = {}
        self._count = 0

    def process(self, row: dict):
        payload = row["payload"]
        bucket = zlib.crc32(payload.encode("utf-8", "surrogatepass")) % DEAD_LETTER_BUCKETS
        self._held.setdefault(bucket, []).append(
            (row["reason"], row["message"], payload, to_micros(row["seen_at"])))
        self._count += 1
        if self._count >= self.MAX_HELD:
            yield from self.finish_bundle()

    def finish_bundle(self):
        held, self._held, self._count = self._held, {}, 0
        for bucket, copies in held.items():
            packed = zstandard.ZstdCompressor(level=1).compress(
                pickle.dumps(copies, pickle.HIGHEST_PROTOCOL))
            yield in_global_window((bucket, packed))


def _number_copies(element, run_id: str):
    """A bucket of a replay's dead letters, every copy of each at hand: the copies of one are
    numbered 0, 1, ... (identical but for when they were seen, so any order gives the same ids),
    each stamped with when it was seen — the grouping left them at the end of the global
    window, which no per-minute file can name."""
    _, packs = element
    copies: dict[str, int] = {}
    decompress = zstandard.ZstdDecompressor().decompress
    for packed in packs:
        for reason, message, payload, seen_at in pickle.loads(decompress(packed)):
            row = {"reason": reason, "message": message, "payload": payload,
                   "seen_at": from_micros(seen_at), "run_id": run_id}
            key = content_key(run_id, row)
            occurrence = copies.get(key, 0)
            copies[key] = occurrence + 1
            row["dead_letter_id"] = dead_letter_id(key, occurrence)
            yield stamped(row)


class IdentifyDeadLetters(beam.PTransform):
    """Dead letters -> the same rows with ``run_id`` and a ``dead_letter_id`` that a rerun or a
    retry gives again (schema.DEAD_LETTERS).

    A bounded input groups the copies (a shuffle of a bundle's dead letters at a time); a
    stream counts them in keyed state (in batch, a state round trip per element). Both number
    the n-th copy n.
    """

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def expand(self, dead_letters):
        run_id = self.run_id
        if dead_letters.is_bounded:
            return (dead_letters
                    | "PackCopies" >> beam.ParDo(_PackCopiesFn()).with_output_types(
                        KV[int, bytes])
                    | "GroupCopies" >> beam.GroupByKey()
                    | "NumberCopies" >> beam.FlatMap(_number_copies, run_id))
        # a str key: deterministic, as keyed state needs
        return (dead_letters
                | "KeyByContent" >> beam.Map(lambda row: (content_key(run_id, row), row))
                .with_output_types(KV[str, Any])
                | "NumberCopies" >> beam.ParDo(_NumberCopiesFn(run_id)))

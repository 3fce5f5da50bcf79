"""JSON Lines files: one object per window pane, money as exact decimal strings.

The rows carry their run (txpipe.sinks.identity) and the files are named by it
(``PREFIX-<run_id>-...``): a rerun of the same replay rewrites its own files with the same
rows, a restarted stream writes files of its own beside the earlier run's. The totals across
runs are the same query as the warehouses' ``window_totals`` view, over the files
(docs/delivery.md, Restarts).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window

from txpipe.schema import ANOMALIES, DEAD_LETTERS, DIMENSION_STATS, WINDOW_STATS, Table
from txpipe.sinks.identity import RunIdentity
from txpipe.windowing import in_global_window


class WriteJsonl(beam.PTransform):
    """Rows -> files named PREFIX-<run_id>-*.jsonl.

    A replay writes one file for the whole run, ``PREFIX-<run_id>-00000-of-00001<suffix>``
    (each bundle a part, joined at the end), which a rerun replaces — its own, never another
    run's; each table has its own suffix. A streaming run writes a file per minute of event
    time, as unbounded output must be cut somewhere.
    """

    def __init__(self, prefix: str, table: Table, streaming: bool, run: RunIdentity,
                 suffix: str = ".jsonl", stamp: bool | Callable[[dict], dict] = True):
        super().__init__()
        self.prefix, self.table, self.streaming, self.suffix = prefix, table, streaming, suffix
        self.run, self.stamp = run, stamp

    def expand(self, rows):
        stamp = None
        if self.stamp:  # True: a statistics row's stamp
            stamp = self.run.stamp if self.stamp is True else self.stamp
        prefix = f"{self.prefix}-{self.run.run_id}"
        if not self.streaming:
            path = f"{prefix}-00000-of-00001{self.suffix}"  # WriteToText's name for one shard
            # one step per row (stamp, JSON, write): a sparse replay has a row per transaction
            parts = rows | "WriteParts" >> beam.ParDo(_WritePartsFn(path, self.table, stamp))
            rows.pipeline | "Once" >> beam.Impulse() | "WriteText" >> beam.ParDo(
                _JoinPartsFn(path), beam.pvalue.AsList(parts))
            return None
        if stamp is not None:
            rows = rows | "Identify" >> beam.Map(stamp)
        lines = rows | "ToJson" >> beam.Map(self.table.to_jsonl)
        directory, name = os.path.split(os.path.abspath(prefix))
        lines | "PerMinute" >> beam.WindowInto(window.FixedWindows(60)) | (
            "WriteFiles" >> fileio.WriteToFiles(
                path=directory,
                file_naming=fileio.default_file_naming(prefix=name, suffix=self.suffix),
                shards=1,
            ))
        return None


class _WritePartsFn(beam.DoFn):
    """Each bundle's rows, stamped and as JSON, -> a part file beside ``path``; yields the
    part's name, in the global window whatever the rows' windows."""

    def __init__(self, path: str, table: Table, stamp: Callable[[dict], dict] | None = None):
        self.path, self.table, self.stamp = path, table, stamp

    def start_bundle(self):
        self._part, self._file = None, None

    def process(self, row):
        if self._file is None:
            self._part = f"{self.path}.{uuid.uuid4().hex}.part"
            self._file = FileSystems.create(self._part)
        if self.stamp is not None:
            row = self.stamp(row)
        self._file.write(self.table.to_jsonl(row).encode("utf-8") + b"\n")

    def finish_bundle(self):
        if self._file is not None:
            self._file.close()
            yield in_global_window(self._part)


class _JoinPartsFn(beam.DoFn):
    """The parts -> one file, assembled aside and renamed into place: what WriteToText does for
    one shard (an empty file for no lines), in three transforms instead of its twelve (each
    costs a replay's start-up).

    Then every other part of this file goes too: a retried bundle's, or a crashed earlier
    attempt of the same run's (the file is the run's own, so its parts are nobody else's), as
    WriteToText removes its temporary directory whole."""

    def __init__(self, path: str):
        self.path = path

    def process(self, _, parts: list[str]):
        if len(parts) == 1:
            FileSystems.rename(parts, [self.path])
        else:
            whole = f"{self.path}.{uuid.uuid4().hex}.part"
            with FileSystems.create(whole) as out:
                for part in sorted(parts):
                    with FileSystems.open(part) as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            FileSystems.rename([whole], [self.path])
        # the joined parts, and any other attempt's (all named PATH.<uuid>.part)
        left = [m.path for m in FileSystems.match([f"{self.path}.*.part"])[0].metadata_list]
        if left:
            FileSystems.delete(left)


@dataclass(frozen=True)
class JsonlSink:
    output: str
    dead_letter_output: str
    dimension_output: str | None = None
    streaming: bool = False
    anomaly_output: str | None = None

    def windows(self, run: RunIdentity) -> beam.PTransform:
        return WriteJsonl(self.output, WINDOW_STATS, self.streaming, run)

    def dimension_stats(self, run: RunIdentity) -> beam.PTransform:
        return WriteJsonl(self.dimension_output or f"{self.output}-by-dimension",
                          DIMENSION_STATS, self.streaming, run, ".by-dimension.jsonl")

    def dead_letters(self, run: RunIdentity) -> beam.PTransform:
        return WriteJsonl(self.dead_letter_output, DEAD_LETTERS, self.streaming, run,
                          ".dead-letters.jsonl", stamp=False)

    def anomalies(self, run: RunIdentity) -> beam.PTransform:
        return WriteJsonl(self.anomaly_output or f"{self.output}-anomalies", ANOMALIES,
                          self.streaming, run, ".anomalies.jsonl", stamp=run.stamp_anomaly)

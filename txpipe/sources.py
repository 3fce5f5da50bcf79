"""Where raw messages come from: Pub/Sub (streaming) or files of one message per line (replay)."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pickle
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from txpipe.contract import ATTR_EVENT_TS


@runtime_checkable
class Source(Protocol):
    """Where raw messages come from: a transform from the pipeline's start to messages (bytes
    or str, or PubsubMessage), whether the input is unbounded, how long the read itself drops
    repeated transaction ids (0: it does not; txpipe.dedupe) and the input's size, if known
    (for sizing a batched route's shuffle).

    A bounded source may also have ``blocks()``: the same messages, a list of them per
    element, for a batched consumer (:func:`read_of`)."""

    streaming: bool
    dedupe_seconds: int

    def transform(self) -> beam.PTransform: ...

    def estimated_bytes(self) -> int | None: ...


def read_of(source: Source, blocks: bool = False) -> beam.PTransform:
    """The read of ``source``: its messages, or with ``blocks`` lists of them where the source
    can cut its input into blocks (a consumer of blocks takes single messages too)."""
    return source.blocks() if blocks and hasattr(source, "blocks") else source.transform()


#: Dataflow's window for deduplicating Pub/Sub messages by their id attribute.
DATAFLOW_ID_DEDUPE_SECONDS = 600


@dataclass(frozen=True)
class PubSubSource:
    """Read message payloads from a subscription.

    ``timestamp_attribute`` lets Dataflow estimate the watermark from event times; ``id_label``
    makes Dataflow drop redeliveries at the source. Other runners refuse ``id_label`` (the
    DirectRunner raises NotImplementedError), so it is off unless asked for — ``run`` sets it
    on Dataflow — and the pipeline's own Dedupe covers every runner. Elements are bytes.
    """

    subscription: str
    timestamp_attribute: str | None = ATTR_EVENT_TS
    id_label: str | None = None
    streaming: bool = True

    @property
    def dedupe_seconds(self) -> int:
        """How long the read itself drops repeated transaction ids: Dataflow deduplicates
        messages with the same ``id_label`` value published within 10 minutes of each other
        (in exactly-once streaming mode, the default), so its pipeline needs no Dedupe state
        of its own for a horizon up to that (txpipe.dedupe)."""
        return DATAFLOW_ID_DEDUPE_SECONDS if self.id_label else 0

    def transform(self) -> beam.PTransform:
        return beam.io.ReadFromPubSub(
            subscription=self.subscription,
            timestamp_attribute=self.timestamp_attribute,
            id_label=self.id_label,
        )

    def estimated_bytes(self) -> None:
        return None  # unbounded


@dataclass(frozen=True)
class FileSource:
    """Replay files of one published message per line (a glob, local or gs://)."""

    pattern: str
    streaming: bool = False
    dedupe_seconds: int = 0

    def transform(self) -> beam.PTransform:
        return _ReadLines(self.pattern)

    def blocks(self) -> beam.PTransform:
        return _ReadLines(self.pattern, blocks=True)

    def estimated_bytes(self) -> int | None:
        """The matched files' size (compressed), for sizing a batched route's shuffle."""
        try:
            return sum(m.size_in_bytes for m in FileSystems.match([self.pattern])[0].metadata_list)
        except Exception:  # unreachable or unmatched: the read itself will say so
            return None


class _ReadLines(beam.PTransform):
    """Lines as bytes, so a line that is not UTF-8 reaches the parser intact and becomes a
    dead letter instead of failing the read.

    A streaming run (``--streaming``) on the DirectRunner cannot expand ReadFromText's
    splittable DoFn ("was not replaced as expected"); there the files are matched and read by
    ReadAllFromText's plain DoFns instead, which every runner supports.
    """

    def __init__(self, pattern: str, blocks: bool = False):
        super().__init__()
        self.pattern, self.blocks = pattern, blocks

    def expand(self, pbegin):
        coder = beam.coders.BytesCoder()
        if pbegin.pipeline.options.view_as(StandardOptions).streaming:
            return (pbegin
                    | "Pattern" >> beam.Create([self.pattern])
                    | "ReadAll" >> beam.io.ReadAllFromText(coder=coder))
        return (pbegin
                | "Pattern" >> beam.Create([self.pattern])
                | "Ranges" >> beam.FlatMap(_ranges, RANGE_BYTES)
                | "Spread" >> beam.Reshuffle()
                | "ReadRanges" >> beam.ParDo(_ReadRangeFn(BLOCK_BYTES, self.blocks)))


#: A batch replay reads files in byte ranges of RANGE_BYTES (shuffled, so workers share a big
#: file), BLOCK_BYTES at a time, split with one bytes.split per block: ReadFromText spent
#: about 5 µs per line, a third of a 1M-line replay. A block's lines (a few thousand) are what
#: a batched consumer holds while it works on them, small enough to stay in the CPU's cache.
RANGE_BYTES = 16 << 20
BLOCK_BYTES = 512 << 10


def _ranges(pattern: str, range_bytes: int) -> Iterator[tuple[str, int, int]]:
    """(path, start, end) byte ranges covering every matched file; compressed files whole."""
    files = FileSystems.match([pattern])[0].metadata_list
    if not files:
        raise OSError(f"no files match {pattern!r}")
    for meta in sorted(files, key=lambda m: m.path):
        if CompressionTypes.detect_compression_type(meta.path) != CompressionTypes.UNCOMPRESSED:
            yield meta.path, 0, -1
            continue
        for start in range(0, meta.size_in_bytes, range_bytes):
            yield meta.path, start, min(start + range_bytes, meta.size_in_bytes)


class _ReadRangeFn(beam.DoFn):
    """The lines that start inside a byte range (a line crossing its end is read whole),
    split on ``\n`` with a trailing ``\r`` removed, as ReadFromText does.

    ``blocks``: each block's lines leave as one list — a batched consumer (the batched route's
    Parse) iterates them itself, and Beam's work per element is paid once per block instead
    of once per line.
    """

    def __init__(self, block_bytes: int, blocks: bool = False):
        self._block, self._blocks = block_bytes, blocks

    def infer_output_type(self, input_type):
        return list[bytes] if self._blocks else bytes

    def process(self, element: tuple[str, int, int]) -> Iterator[bytes | list[bytes]]:
        if self._blocks:
            return self.blocks(element)
        return (line for block in self.blocks(element) for line in block)

    def blocks(self, element: tuple[str, int, int]) -> Iterator[list[bytes]]:
        path, start, end = element
        with FileSystems.open(path) as f:  # decompresses .gz / .bz2 ... (read whole)
            if start:
                f.seek(start - 1)
                f.readline()  # the line under way at ``start`` belongs to the range before
            pos = f.tell() if start else 0  # where ``data`` starts in the file
            tail = b""
            while end < 0 or pos < end:
                block = f.read(self._block)
                if not block:
                    if tail:  # the file's last line, without a newline
                        yield _lines(tail)
                    return
                data = tail + block
                if 0 <= end <= pos + len(data):
                    # the first newline from the range's last byte on ends its last line
                    last = data.find(b"\n", end - pos - 1)
                    if last >= 0:
                        yield _lines(data[:last])
                        return
                cut = data.rfind(b"\n")
                if cut < 0:
                    tail = data
                    continue
                yield _lines(data[:cut])
                tail, pos = data[cut + 1:], pos + cut + 1


def _lines(data: bytes) -> list[bytes]:
    """``data`` split on ``\n``, each line's trailing ``\r`` removed."""
    lines = data.split(b"\n")
    if b"\r" in data:
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines


@dataclass(frozen=True)
class MessagesSource:
    """In-memory messages (tests, notebooks): ``beam.Create`` over bytes or str."""

    messages: tuple
    streaming: bool = False
    dedupe_seconds: int = 0

    def transform(self) -> beam.PTransform:
        return _CreateMessages(self.messages)

    def blocks(self) -> beam.PTransform:
        return _CreateMessages(self.messages, blocks=True)

    def estimated_bytes(self) -> int:
        return sum(len(m) for m in self.messages)


@dataclass(frozen=True)
class TransformSource:
    """Messages from any transform of the pipeline's start — a TestStream in tests, the demo
    and notebooks (unbounded by default)."""

    read: beam.PTransform
    streaming: bool = True
    dedupe_seconds: int = 0

    def transform(self) -> beam.PTransform:
        return self.read

    def estimated_bytes(self) -> None:
        return None


class _CreateMessages(beam.PTransform):
    """``beam.Create`` of one compressed blob, unpacked into the messages.

    Beam pickles a Create's values into the pipeline with bz2 at level 9, and Interactive
    Beam serialises the pipeline a dozen times per ``collect``: for 20k messages (5 MB) that
    was 11 s of a 16 s collect. A zlib blob is five times smaller; above INLINE_BYTES it is
    written once to a temporary file and only its path travels in the pipeline — which is why
    big in-memory inputs are for local runners (tests, notebooks), not remote workers.
    """

    def __init__(self, messages: tuple, blocks: bool = False):
        super().__init__()
        self.messages, self.blocks = messages, blocks

    def expand(self, pbegin):
        blob = zlib.compress(pickle.dumps(list(self.messages), pickle.HIGHEST_PROTOCOL), 1)
        spilled = len(blob) > INLINE_BYTES
        return (pbegin
                | "Create" >> beam.Create([_spill(blob) if spilled else blob], reshuffle=False)
                | "Unpack" >> beam.FlatMap(_unpack, spilled,
                                           BLOCK_MESSAGES if self.blocks else 0))


#: In-memory inputs whose compressed form is bigger than this travel as a temporary file.
INLINE_BYTES = 256 << 10
#: Messages per element of an in-memory input read as blocks.
BLOCK_MESSAGES = 4096


def _unpack(blob_or_path: bytes | str, spilled: bool, block: int) -> list:
    """The messages of a blob (or of the file it was spilled to), or lists of ``block`` of
    them."""
    if spilled:
        with open(blob_or_path, "rb") as f:
            blob_or_path = f.read()
    messages = pickle.loads(zlib.decompress(blob_or_path))
    if not block:
        return messages
    return [messages[i:i + block] for i in range(0, len(messages), block)]


def _spill(blob: bytes) -> str:
    """The blob in a temporary file named by its content, removed when this process exits."""
    path = os.path.join(tempfile.gettempdir(),
                        f"txpipe-messages-{hashlib.sha256(blob).hexdigest()[:20]}.bin")
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.tmp"
        with open(partial, "wb") as f:
            f.write(blob)
        os.replace(partial, path)
        atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)

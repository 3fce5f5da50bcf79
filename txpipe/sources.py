"""Where raw messages come from: Pub/Sub (streaming) or files of one message per line (replay)."""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from txpipe.contract import ATTR_EVENT_TS, ATTR_TRANSACTION_ID


@dataclass(frozen=True)
class PubSubSource:
    """Read message payloads from a subscription.

    ``timestamp_attribute`` lets Dataflow estimate the watermark from event times; ``id_label``
    makes Dataflow drop redeliveries at the source (the DirectRunner ignores it, which is why
    the pipeline also deduplicates). Elements are bytes.
    """

    subscription: str
    timestamp_attribute: str | None = ATTR_EVENT_TS
    id_label: str | None = ATTR_TRANSACTION_ID
    streaming: bool = True

    def transform(self) -> beam.PTransform:
        return beam.io.ReadFromPubSub(
            subscription=self.subscription,
            timestamp_attribute=self.timestamp_attribute,
            id_label=self.id_label,
        )


@dataclass(frozen=True)
class FileSource:
    """Replay files of one published message per line (a glob, local or gs://)."""

    pattern: str
    streaming: bool = False

    def transform(self) -> beam.PTransform:
        return _ReadLines(self.pattern)


class _ReadLines(beam.PTransform):
    """Lines as bytes, so a line that is not UTF-8 reaches the parser intact and becomes a
    dead letter instead of failing the read.

    A streaming run (``--streaming``) on the DirectRunner cannot expand ReadFromText's
    splittable DoFn ("was not replaced as expected"); there the files are matched and read by
    ReadAllFromText's plain DoFns instead, which every runner supports.
    """

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin):
        from apache_beam.options.pipeline_options import StandardOptions

        coder = beam.coders.BytesCoder()
        if pbegin.pipeline.options.view_as(StandardOptions).streaming:
            return (pbegin
                    | "Pattern" >> beam.Create([self.pattern])
                    | "ReadAll" >> beam.io.ReadAllFromText(coder=coder))
        return pbegin | "ReadFromText" >> beam.io.ReadFromText(
            self.pattern, coder=coder, strip_trailing_newlines=True)


@dataclass(frozen=True)
class MessagesSource:
    """In-memory messages (tests, notebooks): ``beam.Create`` over bytes or str."""

    messages: tuple
    streaming: bool = False

    def transform(self) -> beam.PTransform:
        return beam.Create(list(self.messages))

"""The DirectRunner's Pub/Sub read, made fit for local streaming: batched pulls that never block,
a watermark that follows the data, no poison at the source, and a drain.

Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator``: one synchronous pull of at most
10 messages per bundle with a 30 s deadline, a watermark that is the wall clock, and a bundle
that fails — forever, as the message comes back — on one unparseable timestamp attribute.
:class:`LocalPubSubReadEvaluator` replaces it, through the runner's evaluator-override table,
for the pipelines :class:`LocalStreaming` runs; nothing changes on any other runner, and the
pipeline graph is the runtime's.

**Pulls.** Up to ``bundle_size`` messages per bundle (several pulls of up to ``max_messages``),
asking the server to answer at once when nothing is waiting. Like Beam's, the read acknowledges
what it pulled before emitting it: what was pulled is in the pipeline, and a drain writes it.
An unreachable or vanished subscription (an emulator restarting) is waited for, logged once.

**Watermark** (:class:`SourceWatermark`): as Dataflow estimates it for Pub/Sub, from the data.
After each pull the watermark moves to the oldest event time (``event_ts`` attribute) among the
messages pulled that are not already behind it — they are in flight, and the runner holds the
watermark downstream while they are — and, when a pull finds the subscription empty (the read
has caught up), to the wall clock minus an *estimation band* (10 s, Dataflow's). It never goes
back, nor past the wall clock minus the band. So a pipeline that falls behind fires its windows
later instead of dropping on-time data as late, and a backlog published before the pipeline
started is read in full. A message pulled behind the watermark is late data, recorded with the
watermark it met (:class:`Behind`): the runner drops it when that watermark had passed its
window's end plus the allowed lateness (:func:`expiry`), so drops are counted, not silent.

**Poison.** A missing, empty or unparseable ``event_ts`` attribute never fails the read: the
message is read at its publish time (what ReadFromPubSub does without a timestamp attribute),
Parse stamps it with its payload's timestamp or dead-letters it, and the rest of the pull is
processed and acknowledged. Such messages are counted and logged once per subscription.

**Drain** (:meth:`txpipe.lab.live.LiveRun.drain`): the read stops pulling and moves its watermark to the end
of time, so every open window fires and is written and the pipeline finishes — what
``gcloud dataflow jobs drain`` does. :meth:`~txpipe.lab.live.LiveRun.cancel` stops at once and says what was
pulled but not written.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
from apache_beam.runners.direct.transform_evaluator import (
    TransformEvaluatorRegistry,
    TransformResult,
    _PubSubReadEvaluator,
)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

from txpipe.contract import ATTR_TRANSACTION_ID, ContractError, parse_timestamp, to_micros

#: Messages per pull request (the emulator hands out at most 100 per pull whatever is asked).
MAX_MESSAGES = 1000
#: Messages per bundle: the runner pays a fixed cost per bundle and step (it inspects every
#: DoFn's signature, sinks connect); 5,000 caught up fastest of 2,000 / 5,000 / 10,000.
BUNDLE_SIZE = 5000
#: Pause after an empty pull, so an idle read neither spins nor stalls the watermark.
IDLE_SECONDS = 0.1
PULL_TIMEOUT_SECONDS = 30.0
#: How far behind the wall clock the watermark stays once the read has caught up: Dataflow's
#: Pub/Sub estimation band (events reordered by up to that much before publishing are not late).
ESTIMATION_BAND_SECONDS = 10.0

log = logging.getLogger("txpipe.lab.direct_pubsub")

_MILLIS = re.compile(r"-?\d{1,18}")


def attribute_micros(value: str | None) -> int | None:
    """An ``event_ts`` attribute as epoch microseconds: RFC 3339 with an offset (as the contract
    reads timestamps) or integer milliseconds since the epoch; None when missing, empty or
    unparseable."""
    if not value:
        return None
    if _MILLIS.fullmatch(value):
        return int(value) * 1000
    try:
        return to_micros(parse_timestamp(value))
    except (ContractError, ValueError, OverflowError):
        return None


class SourceWatermark:
    """The read's watermark in epoch microseconds: monotone, following the data (module doc)."""

    def __init__(self, band_seconds: float = ESTIMATION_BAND_SECONDS):
        self.band = round(band_seconds * 1_000_000)
        self.micros = MIN_TIMESTAMP.micros

    def pulled(self, events: Sequence[int], now: int) -> int:
        """After a pull of messages with these event times (µs): the oldest of them that is
        not already behind the watermark, never past the wall clock minus the band."""
        ahead = [e for e in events if e >= self.micros]
        if ahead:
            self.micros = max(self.micros, min(min(ahead), now - self.band))
        return self.micros

    def idle(self, now: int) -> int:
        """The subscription had nothing left: whatever comes next is published from now on."""
        self.micros = max(self.micros, now - self.band)
        return self.micros


@dataclass(frozen=True)
class Behind:
    """A message pulled with an event time behind the watermark: late data. The runner drops it
    when the watermark (``watermark``) had passed its window's end plus the allowed lateness."""

    transaction_id: str | None  # the message's transaction_id attribute
    event: int  # µs
    watermark: int  # µs, the read's watermark when it was pulled


@dataclass
class ReadState:
    """One subscription's read: its watermark and what it pulled (shared by bundles, guarded)."""

    subscription: str
    watermark: SourceWatermark
    #: expiry() of the pipeline's windows, when known: counts what arrives too late.
    dropped: Callable[[int, int], bool] | None = None
    pulled: int = 0
    #: Messages whose event_ts attribute was missing, empty or unparseable (read at publish time).
    fallbacks: int = 0
    late: int = 0  # pulled behind the watermark
    too_late: int = 0  # ... after their window's allowed lateness (by ``dropped``)
    by_second: Counter = field(default_factory=Counter)  # pulled messages per event second
    #: When the late messages are kept (the demo reconciles with them): their first deliveries
    #: (a later copy is a duplicate Dedupe drops, whatever its time), and the ids pulled so far.
    behind: list[Behind] | None = None
    seen: set | None = None
    last_empty_pull: float = 0.0  # time.monotonic() when a pull last found nothing waiting
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, events: Sequence[int], ids: Sequence[str | None], fallbacks: int) -> None:
        """A pull, before the watermark moves on."""
        self.pulled += len(events)
        self.fallbacks += fallbacks
        watermark = self.watermark.micros
        seen, dropped = self.seen, self.dropped
        for event, tx_id in zip(events, ids, strict=True):
            self.by_second[event // 1_000_000] += 1
            if seen is not None:
                if tx_id in seen:
                    continue
                seen.add(tx_id)
            if event < watermark:
                self.late += 1
                if dropped is not None and dropped(event, watermark):
                    self.too_late += 1
                if self.behind is not None:
                    self.behind.append(Behind(tx_id, event, watermark))

    def pulled_since(self, micros: int) -> int:
        second = micros // 1_000_000
        with self.lock:
            return sum(n for s, n in self.by_second.items() if s >= second)


def expiry(spec) -> Callable[[int, int], bool]:
    """``dropped(event, watermark)`` (µs) for a :class:`txpipe.windowing.WindowSpec`: whether the
    runner drops an element with that event time arriving at that watermark — Beam's rule,
    ``watermark > window end + allowed lateness``, for its last window (the proto-window of a
    session)."""
    from txpipe.config import WindowType

    lateness = (spec.allowed_lateness_seconds if spec.late_firings else 0) * 1_000_000
    size = spec.size_seconds * 1_000_000
    if spec.kind is WindowType.SESSION:
        gap = spec.gap_seconds * 1_000_000
        return lambda event, watermark: watermark > event + gap + lateness
    step = (spec.period_seconds or max(1, spec.size_seconds // 2)) * 1_000_000 \
        if spec.kind is WindowType.SLIDING else size
    return lambda event, watermark: watermark > event - event % step + size + lateness


class ReadSession:
    """What the reads of one local run share: settings, their states, the drain switch."""

    def __init__(self, bundle_size: int = BUNDLE_SIZE, idle_seconds: float = IDLE_SECONDS,
                 band_seconds: float = ESTIMATION_BAND_SECONDS,
                 dropped: Callable[[int, int], bool] | None = None,
                 keep_late: bool = False):
        self.bundle_size = bundle_size
        self.idle_seconds = idle_seconds
        self.band_seconds = band_seconds
        self.dropped = dropped  # expiry(spec) of the pipeline's windows, when known
        self.keep_late = keep_late
        self.draining = threading.Event()
        self.reads: dict[str, ReadState] = {}
        self._lock = threading.Lock()

    def state(self, subscription: str) -> ReadState:
        with self._lock:
            if subscription not in self.reads:
                self.reads[subscription] = ReadState(
                    subscription, SourceWatermark(self.band_seconds), self.dropped,
                    behind=[] if self.keep_late else None, seen=set() if self.keep_late else None)
            return self.reads[subscription]

    @property
    def pulled(self) -> int:
        return sum(r.pulled for r in self.reads.values())

    @property
    def fallbacks(self) -> int:
        return sum(r.fallbacks for r in self.reads.values())

    def watermark(self) -> int:
        """The lowest watermark of the reads, µs (the minimum timestamp before any pull)."""
        return min((r.watermark.micros for r in self.reads.values()),
                   default=MIN_TIMESTAMP.micros)

    def behind(self) -> list[Behind]:
        """The late messages kept (``keep_late``), first deliveries only."""
        return [b for r in self.reads.values() for b in r.behind or ()]

    def caught_up_since(self, moment: float) -> bool:
        """Every read has found its subscription empty after ``moment`` (time.monotonic())."""
        return bool(self.reads) and all(r.last_empty_pull > moment for r in self.reads.values())

    def stopped(self) -> bool:
        return bool(self.reads) and all(r.stopped for r in self.reads.values())

    def pulled_since(self, micros: int) -> int:
        """Messages pulled with event times from ``micros`` on (µs)."""
        return sum(r.pulled_since(micros) for r in self.reads.values())

    def progress(self) -> dict:
        reads = list(self.reads.values())
        return {"watermark": self.watermark(), "pulled": sum(r.pulled for r in reads),
                "late": sum(r.late for r in reads),
                "caught_up_at": min((r.last_empty_pull for r in reads), default=0.0)}


class LocalPubSubReadEvaluator(_PubSubReadEvaluator):
    """Beam's DirectRunner Pub/Sub evaluator with batched pulls, a data-driven watermark, no
    poison and a drain. ``session`` is set on the subclass :func:`local_pubsub_reads` makes."""

    session: ReadSession
    max_messages = MAX_MESSAGES

    def finish_bundle(self) -> TransformResult:
        state = self.session.state(self._sub_name)
        output = list(self._outputs)[0]
        if self.session.draining.is_set():
            # Stop pulling; everything pulled was emitted in earlier bundles. No further work
            # for this root, and its watermark at the end of time: every window fires.
            state.stopped = True
            return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
        elements, events, ids, emptied, fallbacks = self._pull()
        now = time.time_ns() // 1000
        with state.lock:
            state.record(events, ids, fallbacks)
            watermark = state.watermark.pulled(events, now)
            if emptied:
                watermark = state.watermark.idle(now)
                state.last_empty_pull = emptied
        if fallbacks:
            _warn_once(f"{self._sub_name}/event_ts",
                       f"Pub/Sub read from {self._sub_name}: {state.fallbacks} message(s) so far "
                       f"with a missing, empty or unparseable {self.source.timestamp_attribute!r} "
                       "attribute, read at their publish time (Parse stamps them with their "
                       "payload's timestamp)")
        bundles = []
        if elements:
            bundle = self._evaluation_context.create_bundle(output)
            for event, element in zip(events, elements, strict=True):
                bundle.output(GlobalWindows.windowed_value(element,
                                                           timestamp=Timestamp(micros=event)))
            bundles.append(bundle)
        else:
            time.sleep(self.session.idle_seconds)
        from apache_beam import pvalue

        transform = self._applied_ptransform
        pending = (transform.inputs[0] if transform.inputs
                   else pvalue.PBegin(transform.transform.pipeline))
        unprocessed = self._evaluation_context.create_bundle(pending)
        return TransformResult(self, bundles, [unprocessed], None,
                               {None: Timestamp(micros=watermark)})

    def _pull(self):
        """(elements, their event times in µs, their transaction_id attributes, when the
        subscription was found empty (time.monotonic(), 0.0 if not), how many fell back to the
        publish time). Messages are read from the raw protobuf (the proto-plus wrapper cost
        more than the rest of the read) and acknowledged once per bundle."""
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from google.api_core import exceptions
        from google.pubsub_v1.types import PullResponse

        client = self._get_subscriber_client(self._applied_ptransform)
        attribute = self.source.timestamp_attribute
        with_attributes = self.source.with_attributes
        limit = self.session.bundle_size
        elements, events, ids, ack_ids = [], [], [], []
        fallbacks = 0
        emptied = 0.0
        while len(elements) < limit:
            asked = time.monotonic()
            try:
                response = client.pull(request={
                    "subscription": self._sub_name,
                    "max_messages": min(self.max_messages, limit - len(elements)),
                    # Deprecated for production subscribers, but it is what keeps an empty
                    # pull from holding the runner (and its watermark) for the whole deadline.
                    "return_immediately": True,
                }, timeout=PULL_TIMEOUT_SECONDS, retry=None)
            except _UNAVAILABLE as exc:
                _warn_once(self._sub_name, f"Pub/Sub read from {self._sub_name}: "
                           f"{' '.join(str(exc).split())[:200]}; retrying")
                break
            received = PullResponse.pb(response).received_messages
            if not received:
                emptied = asked
                break
            for item in received:
                message = item.message
                attributes = message.attributes
                event = attribute_micros(attributes.get(attribute)) if attribute else None
                if event is None:
                    fallbacks += bool(attribute)
                    stamp = message.publish_time
                    event = (stamp.seconds * 1_000_000 + stamp.nanos // 1000
                             if stamp.seconds else time.time_ns() // 1000)
                elements.append(PubsubMessage._from_proto_str(message.SerializeToString())
                                if with_attributes else message.data)
                events.append(event)
                ids.append(attributes.get(ATTR_TRANSACTION_ID))
                ack_ids.append(item.ack_id)
        if ack_ids:
            try:
                client.acknowledge(request={"subscription": self._sub_name, "ack_ids": ack_ids})
            except exceptions.GoogleAPICallError as exc:
                # Kept: unacknowledged messages come back, and Dedupe drops the second copy.
                _warn_once(self._sub_name, f"Pub/Sub acknowledge on {self._sub_name}: "
                           f"{' '.join(str(exc).split())[:200]}; retrying")
        return elements, events, ids, emptied, fallbacks


def _unavailable() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions

    return (exceptions.ServiceUnavailable, exceptions.NotFound, exceptions.DeadlineExceeded,
            exceptions.InternalServerError, exceptions.Unknown, exceptions.Aborted)


_UNAVAILABLE = _unavailable()
_warned: set[str] = set()


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", text)


@contextlib.contextmanager
def local_pubsub_reads(session: ReadSession) -> Iterator[ReadSession]:
    """DirectRunner pipelines started inside read Pub/Sub through ``session``'s evaluator (the
    runner copies its evaluator table when a pipeline starts, so leaving does not stop them)."""
    overrides = TransformEvaluatorRegistry._test_evaluators_overrides
    evaluator = type("LocalPubSubRead", (LocalPubSubReadEvaluator,), {"session": session})
    previous = overrides.get(_DirectReadFromPubSub)
    overrides[_DirectReadFromPubSub] = evaluator
    try:
        yield session
    finally:
        if previous is None:
            overrides.pop(_DirectReadFromPubSub, None)
        else:
            overrides[_DirectReadFromPubSub] = previous


class LocalStreaming:
    """The lab's local-runner adaptation, found by the runtime through the
    ``txpipe.local_runner`` entry point (:mod:`txpipe.runners`): streaming from Pub/Sub on the
    DirectRunner with the local read, a dedupe without per-id timers, drain and cancel, for
    every streaming run on the DirectRunner (a bounded source simply ends)."""

    def __init__(self, bundle_size: int = BUNDLE_SIZE, idle_seconds: float = IDLE_SECONDS,
                 band_seconds: float = ESTIMATION_BAND_SECONDS, keep_late: bool = False):
        self.bundle_size = bundle_size
        self.idle_seconds = idle_seconds
        self.band_seconds = band_seconds
        self.keep_late = keep_late  # keep every late first delivery, for a reconciliation

    def dedupe(self, horizon_seconds: int):
        from txpipe.lab.local_dedupe import BucketedDropDuplicates

        return BucketedDropDuplicates(horizon_seconds)

    def run(self, pipeline, windows=None):
        """Start ``pipeline`` through the one local-streaming driver (:mod:`txpipe.lab.live`,
        which imports this module); returns its LiveRun at once."""
        from txpipe.lab import live

        return live.start(pipeline, windows, self.band_seconds, self.keep_late,
                          bundle_size=self.bundle_size, idle_seconds=self.idle_seconds)


# --- Beam's private APIs, used here and nowhere else in the project -------------------------

#: Each private name this adapter relies on, and why; tests/test_beam_private.py resolves every
#: one against the installed Beam, so an upgrade that moves one fails there, loudly, first.
PRIVATE_APIS: tuple[tuple[str, str], ...] = (
    ("apache_beam.runners.direct.direct_runner._DirectReadFromPubSub",
     "the transform the DirectRunner reads Pub/Sub with: the key of the evaluator override"),
    ("apache_beam.runners.direct.transform_evaluator.TransformEvaluatorRegistry."
     "_test_evaluators_overrides",
     "the only hook to replace an evaluator; the runner copies it when a pipeline starts"),
    ("apache_beam.runners.direct.transform_evaluator._PubSubReadEvaluator",
     "the evaluator the local read extends (its client, subscription, outputs)"),
    ("apache_beam.runners.direct.transform_evaluator._PubSubReadEvaluator."
     "_get_subscriber_client", "the runner's cached subscriber client for the read"),
    ("apache_beam.io.gcp.pubsub.PubsubMessage._from_proto_str",
     "a PubsubMessage from the raw protobuf, without the proto-plus wrapper's cost"),
    ("apache_beam.runners.worker.statesampler.StateSampler.scoped_state",
     "patched during a run by streaming_metrics(): counters undercount without it"),
    ("apache_beam.runners.direct.watermark_manager.WatermarkManager."
     "_transform_to_watermarks", "the steps' watermarks, for the pipeline's watermark"),
)
#: Instance attributes the adapter reads, checked by name in their class's source.
PRIVATE_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("apache_beam.runners.direct.transform_evaluator._PubSubReadEvaluator", "_sub_name",
     "the subscription path the read pulls from"),
    ("apache_beam.runners.direct.transform_evaluator._TransformEvaluator", "_outputs",
     "the read's output PCollection"),
    ("apache_beam.runners.direct.transform_evaluator._TransformEvaluator",
     "_evaluation_context", "bundles are created through it"),
    ("apache_beam.runners.direct.transform_evaluator._TransformEvaluator",
     "_applied_ptransform", "the read's transform (its inputs, its pipeline)"),
    ("apache_beam.runners.direct.direct_runner.DirectPipelineResult", "_evaluation_context",
     "the running pipeline's watermark manager is reached through it"),
    ("apache_beam.runners.direct.evaluation_context.EvaluationContext", "_watermark_manager",
     "the steps' watermarks"),
)


def pipeline_watermark(result) -> Timestamp | None:
    """The lowest output watermark of a running DirectRunner pipeline's steps (None when it is
    not one, or before it has steps)."""
    try:
        manager = result._evaluation_context._watermark_manager
        return min(tw.output_watermark for tw in manager._transform_to_watermarks.values())
    except (AttributeError, ValueError):
        return None


_metrics_lock = threading.Lock()
_metrics_runs = 0
_metrics_original = None


@contextlib.contextmanager
def streaming_metrics() -> Iterator[None]:
    """While inside, the streaming DirectRunner commits every bundle's metrics (Beam 2.77);
    the patch is undone when the last run inside ends.

    Its executor creates a metrics container per bundle, but each worker thread's state sampler
    caches the scoped state of a step's first bundle, with that bundle's container: every later
    update lands in a container already committed, and counters undercount. Pointing the cached
    container at the current bundle's cells makes each bundle commit its own updates.
    """
    from apache_beam.runners.worker import statesampler

    global _metrics_runs, _metrics_original
    with _metrics_lock:
        if _metrics_runs == 0:
            original = _metrics_original = statesampler.StateSampler.scoped_state

            def scoped_state(self, name_context, state_name, io_target=None,
                             metrics_container=None):
                state = original(self, name_context, state_name, io_target, metrics_container)
                cached = state.metrics_container
                if (metrics_container is not None and cached is not None
                        and cached is not metrics_container):
                    cached.metrics = metrics_container.metrics
                return state

            statesampler.StateSampler.scoped_state = scoped_state
        _metrics_runs += 1
    try:
        yield
    finally:
        with _metrics_lock:
            _metrics_runs -= 1
            if _metrics_runs == 0:
                statesampler.StateSampler.scoped_state = _metrics_original
                _metrics_original = None

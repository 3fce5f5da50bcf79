"""The DirectRunner's Pub/Sub read, made fit for local streaming: batched pulls that never block,
a watermark that follows the data, no poison at the source, and a drain.

Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator``: one synchronous pull of at most
10 messages per bundle with a 30 s deadline, a watermark that is the wall clock, and a bundle
that fails — forever, as the message comes back — on one unparseable timestamp attribute.
:class:`LocalPubSubReadEvaluator` replaces it, through the runner's evaluator-override table,
for the pipelines :class:`LocalStreaming` runs; nothing changes on any other runner, and the
pipeline graph is the runtime's.

**Pulls.** Up to ``bundle_size`` messages per bundle (several pulls of up to ``max_messages``),
asking the server to answer at once when nothing is waiting. An unreachable or vanished
subscription (an emulator restarting) is waited for, logged once.

**Acknowledging after commit** (when the pipeline writes to DuckDB and its windows are known,
not sessions): a message is held, its lease renewed, until the pipeline's watermark has passed
the end of its last window and nothing is in flight — no bundle pending at any step but the
read, no row the sink was handed and has not committed (``txpipe.sinks.duckdb.uncommitted``).
Then every pane holding it was written: on time if it was read before its window fired, late
(fired at once by the late trigger) otherwise. With fixed windows the sink's commit of an
ON_TIME pane acknowledges its window's on-time messages at once (``ReadSession.committed``). When a window is due but the pipeline is busy,
and stays so for ACK_BARRIER_SECONDS, the read pauses pulling for a moment to let it quiet. Past
``max_held`` held messages it stops pulling. A restarted run holds its watermark for the
subscription's ack deadline and one empty pull after it, so a killed run's redeliveries are
windowed as on time. Otherwise (sessions, other sinks) it acknowledges on pull, as Beam's does.
docs/local-streaming.md says what a kill -9 can then lose or count twice.

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

from txpipe.config import Settings, WindowType
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
#: The latency floor of every window; the setting ``LOCAL_ESTIMATION_BAND_SECONDS`` sets it
#: (docs/local-streaming.md: what each value costs in late data).
ESTIMATION_BAND_SECONDS: float = Settings.model_fields["local_estimation_band_seconds"].default

#: Most messages the read holds unacknowledged (pulled, not yet written); past it, it stops
#: pulling until writes let it acknowledge some. 250,000 is 80 s of traffic at 3,000 tx/s,
#: more than a 30 s window plus the band and the lateness holds at that rate.
MAX_HELD = 250_000
#: Ids per acknowledge / modify-deadline request (Pub/Sub caps a request's size).
ACK_CHUNK = 2_500
#: How long a window's messages may wait for a quiet moment before the read pauses pulling
#: (for at most ACK_PAUSE_SECONDS) to make one (module doc).
ACK_BARRIER_SECONDS = 5.0
ACK_PAUSE_SECONDS = 1.0
#: How long a drain keeps the read scheduled, to acknowledge what gets written.
DRAIN_ACK_SECONDS = 60.0
#: The read's watermark while it drains: past every window's end, the global window's too,
#: but not the end of time, which would tell the runner the read is done.
DRAINING = Timestamp(micros=MAX_TIMESTAMP.micros - 1)

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
    #: Acknowledging after commit: the ack ids held, by the moment (µs) the pipeline's
    #: watermark must pass for every window of theirs to be written (ack_key).
    held: dict[int, list[str]] = field(default_factory=dict)
    held_count: int = 0
    acked: int = 0
    client: object = None  # the subscriber client, to acknowledge after the pipeline ended
    lease_seconds: int = 0  # the subscription's ack deadline, what each renewal extends to
    lease_renewed: float = 0.0  # time.monotonic()
    #: A restart holds its watermark until the killed run's leases have expired and one pull
    #: after that found the subscription empty (time.monotonic(); None: not holding).
    hold_until: float | None = None
    due_since: float | None = None  # when a held key first fell behind the watermark
    drain_started: float = 0.0  # time.monotonic()
    ack_delays: list[float] = field(default_factory=list)  # due -> acknowledged, seconds
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    #: ... of them, those read before the watermark passed their event (on time: in their
    #: window's ON_TIME pane), by the same key, acknowledged as soon as that pane is committed.
    on_time: dict[int, list[str]] = field(default_factory=dict)

    def hold(self, ack_ids: Sequence[str], keys: Sequence[int],
             on_time: Sequence[bool] | None = None) -> None:
        for n, (ack_id, key) in enumerate(zip(ack_ids, keys, strict=True)):
            held = self.on_time if on_time is not None and on_time[n] else self.held
            held.setdefault(key, []).append(ack_id)
        self.held_count += len(ack_ids)

    def release(self, through: int) -> list[str]:
        """The ack ids whose windows all end by ``through`` (µs), no longer held."""
        ids = []
        for held in (self.held, self.on_time):
            for k in [k for k in held if k <= through]:
                ids += held.pop(k)
        self.held_count -= len(ids)
        return ids

    def release_on_time(self, key: int) -> list[str]:
        """The on-time messages of the window ending at ``key`` (µs), no longer held."""
        ids = self.on_time.pop(key, [])
        self.held_count -= len(ids)
        return ids

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
    lateness = (spec.allowed_lateness_seconds if spec.late_firings else 0) * 1_000_000
    size = spec.size_seconds * 1_000_000
    if spec.kind is WindowType.SESSION:
        gap = spec.gap_seconds * 1_000_000
        return lambda event, watermark: watermark > event + gap + lateness
    step = (spec.period_seconds or max(1, spec.size_seconds // 2)) * 1_000_000 \
        if spec.kind is WindowType.SLIDING else size
    return lambda event, watermark: watermark > event - event % step + size + lateness


def ack_key(spec) -> Callable[[int], int] | None:
    """``key(event)`` (µs): the end of the last window of a :class:`txpipe.windowing.WindowSpec`
    an event belongs to — once the pipeline's watermark has passed it and nothing is in flight,
    every window of the event has fired and been written. None for sessions: a session's end
    is not known when its events are read (they are acknowledged on pull)."""
    size = spec.size_seconds * 1_000_000
    if spec.kind is WindowType.SESSION:
        return None
    step = (spec.period_seconds or max(1, spec.size_seconds // 2)) * 1_000_000 \
        if spec.kind is WindowType.SLIDING else size
    return lambda event: event - event % step + size


class ReadSession:
    """What the reads of one local run share: settings, their states, the drain switch.

    ``ack_after``: acknowledge a message once its windows are written (``ack_key(spec)``;
    None: on pull), ``uncommitted()`` telling how many rows the sink holds unwritten;
    ``restart_hold``: hold the watermark until a previous run's leases have expired."""

    def __init__(self, bundle_size: int = BUNDLE_SIZE, idle_seconds: float = IDLE_SECONDS,
                 band_seconds: float = ESTIMATION_BAND_SECONDS,
                 dropped: Callable[[int, int], bool] | None = None,
                 keep_late: bool = False, ack_after: Callable[[int], int] | None = None,
                 uncommitted: Callable[[], int] | None = None, restart_hold: bool = False,
                 max_held: int = MAX_HELD):
        self.bundle_size = bundle_size
        self.idle_seconds = idle_seconds
        self.band_seconds = band_seconds
        self.dropped = dropped  # expiry(spec) of the pipeline's windows, when known
        self.keep_late = keep_late
        self.ack_after = ack_after if uncommitted is not None else None
        self.uncommitted = uncommitted
        self.restart_hold = restart_hold
        self.max_held = max_held
        #: Fixed windows, one table of window rows: an ON_TIME row's commit acknowledges the
        #: on-time messages of its window at once (the read's watermark was behind them, so the
        #: runner held the window open until they were in it).
        self.on_commit = False
        self.draining = threading.Event()
        self.reads: dict[str, ReadState] = {}
        self._lock = threading.Lock()

    def committed(self, table: str, rows: Sequence[dict]) -> None:
        """A DuckDB commit of ``rows`` (``txpipe.sinks.duckdb.COMMIT_LISTENERS``)."""
        if not self.on_commit:
            return
        ends = {to_micros(r["window_end_time"]) for r in rows
                if r.get("pane_timing") == "ON_TIME" and r.get("window_end_time") is not None}
        for state in list(self.reads.values()):
            if state.client is None or not state.on_time:
                continue
            with state.lock:
                ids = [a for end in ends for a in state.release_on_time(end)]
            if ids:
                _acknowledge(state, ids)

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

    def acked(self) -> int:
        return sum(r.acked for r in self.reads.values())

    def held(self) -> int:
        """Messages pulled and not acknowledged: not yet written."""
        return sum(r.held_count for r in self.reads.values())

    def ack_delays(self) -> list[float]:
        """Seconds from a window's messages falling due (the watermark past their windows) to
        their acknowledgement: the commit-to-ack instant, plus the wait for a quiet moment."""
        return sorted(d for r in self.reads.values() for d in r.ack_delays)

    def progress(self) -> dict:
        reads = list(self.reads.values())
        return {"watermark": self.watermark(), "pulled": sum(r.pulled for r in reads),
                "late": sum(r.late for r in reads), "held": self.held(),
                "acked": sum(r.acked for r in reads),
                "holding": any(r.hold_until is not None for r in reads),
                "caught_up_at": min((r.last_empty_pull for r in reads), default=0.0)}

    def finished(self) -> None:
        """The pipeline ended (drained): whatever is still held was written; acknowledge it."""
        for state in self.reads.values():
            if state.held_count and state.client is not None:
                _acknowledge(state, state.release(MAX_TIMESTAMP.micros))


class LocalPubSubReadEvaluator(_PubSubReadEvaluator):
    """Beam's DirectRunner Pub/Sub evaluator with batched pulls, a data-driven watermark, no
    poison and a drain. ``session`` is set on the subclass :func:`local_pubsub_reads` makes."""

    session: ReadSession
    max_messages = MAX_MESSAGES

    def finish_bundle(self) -> TransformResult:
        state = self.session.state(self._sub_name)
        output = list(self._outputs)[0]
        tracked = self.session.ack_after is not None
        if tracked:
            state.client = state.client or self._get_subscriber_client(self._applied_ptransform)
            barrier = self._acknowledge_written(state)
            self._renew_leases(state)
        if self.session.draining.is_set():
            # Stop pulling; everything pulled was emitted in earlier bundles. Its watermark just
            # short of the end of time (past every window's end, the global one's included):
            # every window fires, and the read stays scheduled — renewing leases,
            # acknowledging — until every other step has finished; then the end of time.
            state.stopped = True
            state.drain_started = state.drain_started or time.monotonic()
            if self._drained(state):
                return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
            time.sleep(self.session.idle_seconds)
            return TransformResult(self, [], [self._again()], None, {None: DRAINING})
        if tracked and (barrier or state.held_count >= self.session.max_held):
            if state.held_count >= self.session.max_held:
                _warn_once(f"{self._sub_name}/held",
                           f"Pub/Sub read from {self._sub_name}: {state.held_count:,} messages "
                           "held until written; pulling pauses until some are")
            time.sleep(self.session.idle_seconds)
            return TransformResult(self, [], [self._again()], None,
                                   {None: Timestamp(micros=state.watermark.micros)})
        elements, events, ids, ack_ids, emptied, fallbacks = self._pull()
        now = time.time_ns() // 1000
        with state.lock:
            behind = state.watermark.micros  # before this pull moves it
            state.record(events, ids, fallbacks)
            if tracked:
                key = self.session.ack_after
                state.hold(ack_ids, [key(e) for e in events],
                           [e >= behind for e in events] if self.session.on_commit else None)
            if state.hold_until is not None:  # a restart: the watermark waits (module doc)
                if emptied and emptied > state.hold_until:
                    state.hold_until = None
                watermark = state.watermark.micros
            else:
                watermark = state.watermark.pulled(events, now)
            if emptied:
                if state.hold_until is None:
                    watermark = state.watermark.idle(now)
                state.last_empty_pull = emptied
        if not tracked:
            _acknowledge(state, ack_ids, self._get_subscriber_client(self._applied_ptransform))
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
        return TransformResult(self, bundles, [self._again()], None,
                               {None: Timestamp(micros=watermark)})

    def _again(self):
        """The read's unprocessed root bundle: it is scheduled again."""
        from apache_beam import pvalue

        transform = self._applied_ptransform
        pending = (transform.inputs[0] if transform.inputs
                   else pvalue.PBegin(transform.transform.pipeline))
        return self._evaluation_context.create_bundle(pending)

    def _settled(self) -> tuple[int, bool]:
        """(the pipeline's watermark in µs, whether nothing is in flight): no bundle or fired
        timer pending at any step but this read, no row handed to the sink and not committed.
        The watermark is read first: a window it has passed has fired, and once nothing is in
        flight its pane is written."""
        manager = self._evaluation_context._watermark_manager
        steps = list(manager._transform_to_watermarks.items())
        lowest = min(tw.output_watermark for _, tw in steps).micros
        me = self._applied_ptransform
        busy = any(tw._pending or tw._fired_timers for t, tw in steps if t is not me)
        return lowest, not busy and self.session.uncommitted() == 0

    def _drained(self, state: ReadState) -> bool:
        """Whether a drain is over for this read: every other step's watermark at the end of
        time and nothing held (or DRAIN_ACK_SECONDS passed; what is still held is then
        acknowledged once the pipeline ends).

        Early panes can leave a window's GroupByKey holding its output watermark with its
        input at the end of time and no timer left (Beam's DirectRunner, 2.77): the runner's
        stall check then fails the drain. When nothing is in flight and the DuckDB sink has
        committed every row, such a hold guards no data (every event-time timer has fired),
        and it is released here."""
        manager = self._evaluation_context._watermark_manager
        me = self._applied_ptransform
        others = [tw for t, tw in list(manager._transform_to_watermarks.items()) if t is not me]
        if all(tw.output_watermark >= DRAINING for tw in others) and not state.held_count:
            return True
        if time.monotonic() - state.drain_started > DRAIN_ACK_SECONDS:
            return True
        if (self.session.uncommitted is None or self.session.uncommitted()
                or any(tw._pending or tw._fired_timers for tw in others)):
            return False
        for tw in others:
            if (tw.input_watermark >= DRAINING > tw.output_watermark
                    and tw._keyed_earliest_holds):
                _warn_once(f"{self._sub_name}/stuck", "drain: releasing a watermark hold "
                           "left with no timer (early panes on the DirectRunner)")
                with tw._lock:
                    tw._keyed_earliest_holds.clear()
        return False

    def _acknowledge_written(self, state: ReadState) -> bool:
        """Acknowledge what the sink has written; True when something has been due for
        ACK_BARRIER_SECONDS and the pipeline is still busy: the read then skips pulls for up to
        ACK_PAUSE_SECONDS so that it quiets down, and pulls on if it does not."""
        if not state.held_count:
            return False
        watermark, settled = self._settled()
        if min(min(state.held, default=MAX_TIMESTAMP.micros),
               min(state.on_time, default=MAX_TIMESTAMP.micros)) > watermark:
            state.due_since = None
            return False
        now = time.monotonic()
        if state.due_since is None:
            state.due_since = now
        if not settled:  # quiet once caught up; if not, pause pulling a moment to let it be
            waited = now - state.due_since
            if waited >= ACK_BARRIER_SECONDS + ACK_PAUSE_SECONDS:
                state.due_since = now  # still busy: pull on (the held bound stops it at last)
            return waited >= ACK_BARRIER_SECONDS
        with state.lock:
            ids = state.release(watermark)
        _acknowledge(state, ids)
        state.ack_delays.append(now - state.due_since)
        state.due_since = None
        return False

    def _renew_leases(self, state: ReadState) -> None:
        """Extend the deadline of every held message before it runs out (and, on a restart,
        start the watermark hold: a killed run's leases last at most the ack deadline)."""
        from google.api_core import exceptions

        now = time.monotonic()
        if not state.lease_seconds:
            try:
                deadline = state.client.get_subscription(
                    request={"subscription": self._sub_name}).ack_deadline_seconds
            except exceptions.GoogleAPICallError:
                deadline = 0
            state.lease_seconds = min(600, max(10, deadline or 60))
            state.lease_renewed = now
            if self.session.restart_hold:
                state.hold_until = now + state.lease_seconds + 1
            return
        if now - state.lease_renewed < state.lease_seconds / 3 or not state.held_count:
            return
        ids = [a for held in (state.held, state.on_time) for batch in list(held.values())
               for a in batch]
        try:
            for start in range(0, len(ids), ACK_CHUNK):
                state.client.modify_ack_deadline(request={
                    "subscription": self._sub_name, "ack_ids": ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": state.lease_seconds})
        except exceptions.GoogleAPICallError as exc:
            _warn_once(f"{self._sub_name}/lease", f"Pub/Sub modify deadline on "
                       f"{self._sub_name}: {' '.join(str(exc).split())[:200]}; retrying")
            return
        state.lease_renewed = now

    def _pull(self):
        """(elements, their event times in µs, their transaction_id attributes, their ack ids,
        when the subscription was found empty (time.monotonic(), 0.0 if not), how many fell
        back to the publish time). Messages are read from the raw protobuf (the proto-plus
        wrapper cost more than the rest of the read)."""
        from apache_beam.io.gcp.pubsub import PubsubMessage
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
        return elements, events, ids, ack_ids, emptied, fallbacks


def _acknowledge(state: ReadState, ack_ids: Sequence[str], client=None) -> None:
    from google.api_core import exceptions

    client = client or state.client
    try:
        for start in range(0, len(ack_ids), ACK_CHUNK):
            client.acknowledge(request={"subscription": state.subscription,
                                        "ack_ids": ack_ids[start:start + ACK_CHUNK]})
    except exceptions.GoogleAPICallError as exc:
        # Kept: unacknowledged messages come back, and Dedupe drops the second copy.
        _warn_once(state.subscription, f"Pub/Sub acknowledge on {state.subscription}: "
                   f"{' '.join(str(exc).split())[:200]}; retrying")
        return
    state.acked += len(ack_ids)


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

    def record_progress(self, run, warehouse: str):
        """Record ``run``'s progress (watermark, pulled, backlog) beside ``warehouse`` until
        the returned recorder is stopped: what the dashboard's lag and backlog read."""
        from txpipe.lab import progress

        return progress.follow(warehouse, run)


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
    ("apache_beam.runners.direct.watermark_manager._TransformWatermarks", "_pending",
     "bundles not yet processed by a step: nothing in flight before acknowledging"),
    ("apache_beam.runners.direct.watermark_manager._TransformWatermarks", "_fired_timers",
     "timers fired and not yet processed"),
    ("apache_beam.runners.direct.watermark_manager._TransformWatermarks",
     "_keyed_earliest_holds", "a drain releases a hold early panes leave behind"),
    ("apache_beam.runners.direct.watermark_manager._TransformWatermarks", "_lock",
     "guards the holds while they are released"),
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

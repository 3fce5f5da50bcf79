"""The stream itself: a deterministic iterator of messages, each labelled with what it is.

Labels (valid / duplicate / malformed, the dead-letter reason, lateness) travel with the bytes,
so the ground truth is computed from what was generated, never by re-parsing it.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from itertools import count

from simulator.catalog import Catalog
from simulator.config import SimulationConfig
from simulator.faults import REASONS, Record, break_record
from txpipe.contract import (
    ATTR_EVENT_TS,
    ATTR_TRANSACTION_ID,
    Reason,
    encode_message,
    format_timestamp,
)

#: Duplicates re-send one of the last this-many valid messages, as a redelivery after a missed
#: ack would: recent enough to fall inside the pipeline's dedupe horizon at any sensible rate.
DUPLICATE_HORIZON = 500
#: Hour (UTC) when a daily rhythm peaks; the trough is twelve hours later.
RHYTHM_PEAK_HOUR = 14


class MessageKind(str, Enum):
    VALID = "valid"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message as published, plus what the pipeline is expected to make of it."""

    index: int  # position in the stream
    data: bytes
    attributes: dict[str, str]
    kind: MessageKind
    send_offset: float  # seconds after the start at which it is sent (virtual clock)
    event_time: datetime | None = None  # what the message claims; None when it is malformed
    reason: Reason | None = None  # the dead-letter reason for a malformed message
    transaction_id: str | None = None
    amount: Decimal | None = None
    late: bool = False  # event time deliberately ``late_seconds`` before the send time
    variant: str | None = None  # which kind of malformation
    anomaly: str | None = None  # the injected scenario this message belongs to (anomalies.py)


def send_offsets(cfg: SimulationConfig) -> Iterator[float]:
    """Seconds after the start at which each message is sent.

    Flat: i / rate, computed directly so no error accumulates. With a daily rhythm the
    instantaneous rate follows a cosine over the UTC day, peaking at RHYTHM_PEAK_HOUR.
    """
    rate = cfg.event_rate
    if not cfg.daily_rhythm:
        for i in count():
            yield i / rate
    assert cfg.start is not None
    day_start = cfg.start.replace(hour=0, minute=0, second=0, microsecond=0)
    into_day = (cfg.start - day_start).total_seconds() - RHYTHM_PEAK_HOUR * 3600
    offset = 0.0
    while True:
        yield offset
        phase = 2 * math.pi * (into_day + offset) / 86_400
        offset += 1.0 / (rate * (1.0 + cfg.daily_rhythm * math.cos(phase)))


def generate(cfg: SimulationConfig) -> Iterator[SimMessage]:
    """The stream for ``cfg``; identical for the same config and start, message for message.

    When ``cfg.start`` is None the stream starts now. Transaction ids depend on the seed and
    the start, so two live runs never reuse ids the pipeline would drop as duplicates.
    With ``cfg.anomalies`` the stream passes through :class:`simulator.anomalies.Injector`.
    """
    cfg = cfg.started()
    if cfg.anomalies:
        from simulator.anomalies import Injector

        injector = Injector(cfg, cfg.start)  # type: ignore[arg-type]
        for message in _stream(cfg):
            yield from injector.apply(message)
        return
    yield from _stream(cfg)


def _stream(cfg: SimulationConfig) -> Iterator[SimMessage]:
    start: datetime = cfg.start  # type: ignore[assignment]
    rng = random.Random(f"stream/{cfg.seed}")
    ids = random.Random(f"ids/{cfg.seed}/{format_timestamp(start)}")
    catalog = Catalog(cfg.seed)
    recent: deque[SimMessage] = deque(maxlen=DUPLICATE_HORIZON)
    duplicate_cut = cfg.duplicate_rate
    malformed_cut = cfg.duplicate_rate + cfg.malformed_rate
    jitter_ms = cfg.jitter_seconds * 1000
    late_ms = round(cfg.late_seconds * 1000)
    malformed = 0
    for index, offset in enumerate(send_offsets(cfg)):
        if (cfg.count and index >= cfg.count) or (cfg.duration is not None and offset >= cfg.duration):
            return
        draw = rng.random()
        if draw < duplicate_cut:
            if recent:
                original = recent[rng.randrange(len(recent))]
                yield SimMessage(
                    index, original.data, original.attributes, MessageKind.DUPLICATE, offset,
                    original.event_time, None, original.transaction_id, original.amount, original.late,
                )
                continue
            draw = 1.0  # nothing to re-send yet: a valid message instead
        send_ms = round(offset * 1000)
        event_ms = send_ms - (round(rng.random() * jitter_ms) if jitter_ms else 0)
        late = bool(cfg.late_rate) and rng.random() < cfg.late_rate
        if late:
            event_ms -= late_ms
        event_time = start + timedelta(milliseconds=event_ms)
        transaction_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
        p = catalog.purchase(rng)
        data, attributes = encode_message(
            transaction_id, p.amount, event_time, user_id=p.user_id, merchant_id=p.merchant_id,
            category=p.category, country=p.country, payment_method=p.payment_method,
            currency=p.currency,
        )
        if draw < malformed_cut:
            reason = REASONS[malformed % len(REASONS)]
            malformed += 1
            record = Record(data, transaction_id, p.amount, attributes[ATTR_EVENT_TS], {
                "user_id": p.user_id, "merchant_id": p.merchant_id, "category": p.category,
                "country": p.country, "payment_method": p.payment_method, "currency": p.currency,
            })
            variant, bad = break_record(rng, reason, record)
            # A readable event_ts attribute even on bad records: Beam's Pub/Sub reader fails the
            # whole bundle on an unparseable timestamp attribute, before any dead-lettering.
            bad_attributes = {
                ATTR_EVENT_TS: format_timestamp(start + timedelta(milliseconds=send_ms)),
                ATTR_TRANSACTION_ID: transaction_id,
            }
            yield SimMessage(index, bad, bad_attributes, MessageKind.MALFORMED, offset, reason=reason,
                             variant=variant)
            continue
        message = SimMessage(index, data, attributes, MessageKind.VALID, offset, event_time, None,
                             transaction_id, p.amount, late)
        recent.append(message)
        yield message

"""``python -m simulator``: flags over txpipe's settings, one-line errors, a clean stop on signals."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

import orjson

from simulator.config import SimulationConfig, SimulationConfigError
from simulator.feedback import LiveStatus
from simulator.runner import publish, write
from simulator.sinks import TargetError
from simulator.stats import PublishStats
from simulator.truth import TruthBuilder
from txpipe.config import Settings, load_settings
from txpipe.errors import OneLineParser, UsageError, command

PROG = "simulator"


def _start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; add one, e.g. {text}Z")
    return moment


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Publish a realistic, seeded stream of transactions to Pub/Sub, stdout or a "
                    "JSON-lines file, with injected faults and a ground-truth manifest. Defaults "
                    "come from the environment / .env (PROJECT_ID, PUBSUB_TOPIC_ID, "
                    "PUBLISHER_INTERVAL, PUBLISHER_MAX_MESSAGES, WINDOW_SIZE_SECONDS).")
    out = p.add_argument_group("target")
    out.add_argument("--target", choices=("pubsub", "stdout", "file"), default="pubsub",
                     help="where messages go (default: pubsub)")
    out.add_argument("--output", metavar="PATH.jsonl", help="the file for --target file")
    out.add_argument("--project", help="Google Cloud project (default: PROJECT_ID)")
    out.add_argument("--topic", help="Pub/Sub topic id (default: PUBSUB_TOPIC_ID)")
    out.add_argument("--create-topic", action="store_true", help="create the topic when missing")

    flow = p.add_argument_group("stream")
    flow.add_argument("--rate", type=float, metavar="N",
                      help="messages per second, 0 = as fast as possible "
                           "(default: 1 / PUBLISHER_INTERVAL)")
    flow.add_argument("--count", type=int, metavar="N",
                      help="messages to send, 0 = endless (default: PUBLISHER_MAX_MESSAGES)")
    flow.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of stream")
    flow.add_argument("--seed", type=int, default=1, help="same seed and flags, same stream (default: 1)")
    flow.add_argument("--start", type=_start, metavar="RFC3339",
                      help="event time of the first message, e.g. 2026-11-27T10:00:00Z; replays "
                           "unpaced (default: now, paced in real time)")
    flow.add_argument("--daily-rhythm", type=float, default=0.0, metavar="A",
                      help="let the rate swing by +-A (0..1) over a UTC day, peaking at 14:00")

    faults = p.add_argument_group("event time and faults")
    faults.add_argument("--jitter-seconds", type=float, default=0.0, metavar="S",
                        help="event times up to S seconds before the send time (out of order)")
    faults.add_argument("--late-rate", type=float, default=0.0, metavar="F",
                        help="fraction of valid events sent --late-seconds after they happened")
    faults.add_argument("--late-seconds", type=float, default=120.0, metavar="S",
                        help="how late late events are (default: 120)")
    faults.add_argument("--duplicate-rate", type=float, default=0.0, metavar="F",
                        help="fraction of messages that re-send an earlier one byte for byte")
    faults.add_argument("--malformed-rate", type=float, default=0.0, metavar="F",
                        help="fraction of messages that break the contract, spread over every "
                             "dead-letter reason")

    labelled = p.add_argument_group("labelled anomalies (listed in the --truth manifest)")
    labelled.add_argument("--anomalies", metavar="SCENARIOS",
                          help="inject anomalies: default (all, in turn) or a comma-separated "
                               "list of volume_spike, amount_burst, drop_out")
    labelled.add_argument("--anomaly-rate", type=float, default=0.05, metavar="F",
                          help="share of windows that get one (default: 0.05)")
    labelled.add_argument("--anomaly-dimension", default="category", metavar="FIELD",
                          help="the field a volume spike is about (default: category)")
    labelled.add_argument("--anomaly-warmup", type=int, default=20, metavar="N",
                          help="windows left clean at the start (default: 20)")

    report = p.add_argument_group("ground truth and reporting")
    report.add_argument("--window-size", type=int, metavar="S",
                        help="window of the truth manifest (default: WINDOW_SIZE_SECONDS)")
    report.add_argument("--truth", metavar="PATH.json",
                        help="write the expected per-window results of what was delivered")
    report.add_argument("--stats-json", metavar="PATH",
                        help='write {"published", "failed", "elapsed_s", "rate_msg_s", ...}')
    return p


def _check_writable(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{flag}: directory {Path(path).parent} does not exist")


def make_config(args: argparse.Namespace, settings: Settings) -> SimulationConfig:
    """Flags over settings; the seed system's PUBLISHER_* variables are the defaults."""
    interval = settings.publisher_interval
    return SimulationConfig(
        seed=args.seed,
        count=args.count if args.count is not None else settings.publisher_max_messages,
        rate=args.rate if args.rate is not None else (1.0 / interval if interval > 0 else 0.0),
        start=args.start,
        duration=args.duration,
        duplicate_rate=args.duplicate_rate,
        malformed_rate=args.malformed_rate,
        late_rate=args.late_rate,
        late_seconds=args.late_seconds,
        jitter_seconds=args.jitter_seconds,
        window_size=args.window_size if args.window_size is not None else settings.window_size_seconds,
        daily_rhythm=args.daily_rhythm,
        anomalies=tuple(args.anomalies.split(",")) if args.anomalies else (),
        anomaly_rate=args.anomaly_rate,
        anomaly_dimension=args.anomaly_dimension,
        anomaly_warmup=args.anomaly_warmup,
    )


def _validate(args: argparse.Namespace, cfg: SimulationConfig) -> None:
    if args.target == "file" and not args.output:
        raise UsageError("--target file needs --output PATH.jsonl")
    if args.output and args.target != "file":
        raise UsageError("--output only applies to --target file")
    if args.target == "file" and cfg.endless:
        raise UsageError("--target file needs --count or --duration (an endless file fills the disk)")
    if args.target != "pubsub" and (args.create_topic or args.project or args.topic):
        raise UsageError("--project, --topic and --create-topic only apply to --target pubsub")
    for path, flag in ((args.output, "--output"), (args.truth, "--truth"),
                       (args.stats_json, "--stats-json")):
        _check_writable(path, flag)


def _install_signals(stop: threading.Event) -> None:
    """First Ctrl+C / SIGTERM: stop generating, flush, report. A second one: give up now."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _silence_stdout() -> None:
    """After the reader closed the pipe, keep interpreter shutdown from failing on flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(project_id=args.project, pubsub_topic_id=args.topic)
    try:
        cfg = make_config(args, settings)
    except SimulationConfigError as exc:
        raise UsageError(f"--{exc.field.replace('_', '-')}: {exc.detail}") from None
    _validate(args, cfg)

    stop = threading.Event()
    _install_signals(stop)
    truth = TruthBuilder(cfg.window_size) if args.truth else None
    stats: PublishStats | None = None
    try:
        with LiveStatus() as live:
            if args.target == "pubsub":
                stats = publish(cfg, settings.topic_path, live.update, stop, truth=truth,
                                create_topic=args.create_topic)
            else:
                stats = write(cfg, args.output if args.target == "file" else None, live.update,
                              stop, truth=truth)
    except TargetError as exc:
        raise UsageError(exc) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted twice, pending messages were abandoned", file=sys.stderr)
        return 130
    reader_left = args.target == "stdout" and stats.interrupted and stats.failed > 0
    if reader_left:
        _silence_stdout()
    if truth is not None:
        truth.build(stats.config).to_json(args.truth)
    if args.stats_json:
        Path(args.stats_json).write_bytes(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2))
    print(f"{PROG}: {stats.summary()}", file=sys.stderr)
    return 1 if stats.failed and not reader_left else 0

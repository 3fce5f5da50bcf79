"""The Flex Template: its parameters, generated from the settings model and ``run``'s parser
(``dataflow/metadata.json``), and the launcher's entry point (``dataflow/main.py``).

Flex Templates name parameters with underscores and pass each as ``--name=value``; the command
line has one spelling, dashed. :func:`run_flags` translates once, here, where they come in —
so templates built before the command line lost its underscored spellings keep working.

``python -m txpipe.flex_template > dataflow/metadata.json`` rewrites the metadata; a test keeps
the committed file current.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from typing import Any

from txpipe import cli
from txpipe.config import Settings, setting_flags
from txpipe.contract import OPTIONAL_FIELDS

NAME = "txpipe: streaming transaction statistics"
DESCRIPTION = ("Reads JSON transactions from Pub/Sub (event time from the event_ts attribute, "
               "redeliveries dropped by transaction_id), dead-letters invalid ones, windows "
               "them in event time and writes exact count / sum / avg / min / max per window "
               "pane to BigQuery. Parameters are the flags of `python -m txpipe run`.")


def run_flags(parameters: list[str]) -> list[str]:
    """The launcher's ``--name=value`` parameters as ``run`` flags (``--window_size=60`` ->
    ``--window-size=60``, ``--anomalies=false`` -> ``--no-anomalies``); Beam's options pass
    through as they are."""
    actions = {o: a for a in cli.build_parser()._actions for o in a.option_strings}
    flags = []
    for arg in parameters:
        name, eq, value = arg.partition("=")
        dashed = name.replace("_", "-")
        action = actions.get(dashed) if name.startswith("--") else None
        if action is None:
            flags.append(arg)
        elif isinstance(action, argparse.BooleanOptionalAction) and eq:
            flags.append(dashed if value.strip().lower() in ("true", "1", "yes")
                         else f"--no-{dashed[2:]}")
        else:
            flags.append(f"{dashed}={value}" if eq else dashed)
    return flags


def launch(argv: list[str] | None = None) -> int:
    """The Flex Template launcher's entry point: ``run`` on Dataflow with the parameters."""
    args = run_flags(list(sys.argv[1:] if argv is None else argv))
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DataflowRunner")
    return cli.main(args)


# --- the metadata -------------------------------------------------------------------------

def _bare(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


def _number_regex(info: Any, integer: bool) -> str:
    """A first check for the template's form; the settings model validates the value."""
    bound = {name: getattr(m, name) for m in info.metadata for name in ("ge", "le")
             if getattr(m, name, None) is not None}
    if not integer:
        return r"^[0-9]{1,6}(\.[0-9]{1,6})?$"
    positive = f"[1-9][0-9]{{0,{len(str(bound['le'])) - 1 if 'le' in bound else 6}}}"
    return f"^(0|{positive})$" if bound.get("ge") == 0 else f"^{positive}$"


def _enum(values: list[str]) -> dict[str, Any]:
    return {"paramType": "ENUM", "enumOptions": [{"value": v} for v in values],
            "regexes": [f"^({'|'.join(values)})$"]}


def _setting_parameter(flag) -> dict[str, Any]:
    info = Settings.model_fields[flag.field]
    parameter: dict[str, Any] = {"name": flag.beam_name, "label": flag.label,
                                 "helpText": flag.help, "isOptional": True}
    default = info.default
    if default is not None:
        default = default.value if isinstance(default, Enum) else default
        parameter["defaultValue"] = str(default).lower() if flag.kind is bool else str(default)
    pattern = next((m.pattern for m in info.metadata if hasattr(m, "pattern")), None)
    if flag.choices:
        parameter.update(_enum(flag.choices))
    elif flag.kind is bool:
        parameter.update(paramType="BOOLEAN", regexes=["^(true|false|True|False)$"])
    elif flag.kind in (int, float):
        parameter.update(paramType="NUMBER", regexes=[_number_regex(info, flag.kind is int)])
    else:
        parameter.update(paramType="TEXT", regexes=[pattern] if pattern else [])
    return parameter


def _run_parameters() -> list[dict[str, Any]]:
    """``run``'s own flags the streaming job takes (help from ``run``'s parser)."""
    helps = {a.dest: a.help for a in cli.build_parser()._actions}
    project = _bare(Settings.model_fields["project_id"].metadata[0].pattern)
    name = _bare(Settings.model_fields["pubsub_topic_id"].metadata[0].pattern)
    return [
        {"name": "subscription", "label": "Input Pub/Sub subscription",
         "helpText": helps["subscription"], "isOptional": True,
         "paramType": "PUBSUB_SUBSCRIPTION",
         "regexes": [f"^projects/{project}/subscriptions/{name}$"]},
        {"name": "dead_letter_topic", "label": "Dead-letter Pub/Sub topic",
         "helpText": helps["dead_letter_topic"], "isOptional": True,
         "paramType": "PUBSUB_TOPIC", "regexes": [f"^projects/{project}/topics/{name}$"]},
        {"name": "breakdown", "label": "Per-field breakdown", "helpText": helps["breakdown"],
         "isOptional": True, **_enum(list(OPTIONAL_FIELDS))},
    ]


def metadata() -> dict[str, Any]:
    """The Flex Template's metadata: ``run``'s streaming flags and every setting that has a
    template label."""
    settings = [_setting_parameter(f) for f in setting_flags() if f.label and not f.beam]
    return {"name": NAME, "description": DESCRIPTION, "streaming": True,
            # At-least-once mode may replay a shuffle into the combine: sums would double count.
            "supportsExactlyOnce": True, "supportsAtLeastOnce": False,
            "parameters": _run_parameters() + settings}


def metadata_json() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(metadata_json())

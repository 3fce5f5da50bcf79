"""One options layer: the typed settings (:mod:`txpipe.config`) are also the command line's
flags and Beam pipeline options — derived here, never listed by hand a second time.

A settings field that declares a ``flag`` becomes

- ``--dashed-flag`` on ``run`` / ``export-job`` (``--window-size 60``),
- ``--underscored_flag``, the same option as Beam and Flex Templates spell it
  (``--window_size=60``), registered with Beam's parser through :class:`TxpipeOptions`,
- and the environment variable / ``.env`` name it always had (``WINDOW_SIZE_SECONDS``).

Values are validated once, by the settings model, whichever spelling brought them.
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from txpipe.config import Settings


@dataclass(frozen=True)
class SettingFlag:
    field: str  # the settings field (dest)
    flag: str  # dashed name, without the leading --
    help: str
    kind: type  # int, float, str, bool or an Enum
    beam: bool  # Beam defines the option itself (--project, --region)

    @property
    def spellings(self) -> tuple[str, ...]:
        dashed, underscored = f"--{self.flag}", f"--{self.flag.replace('-', '_')}"
        return (dashed,) if dashed == underscored else (dashed, underscored)

    @property
    def choices(self) -> list[str] | None:
        if isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            return [m.value for m in self.kind]
        return None

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dest": self.field, "default": None, "help": self.help}
        if self.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif self.choices:
            kwargs["choices"] = self.choices
        else:
            kwargs["type"] = self.kind
            kwargs["metavar"] = ("SECONDS" if self.field.endswith("_seconds")
                                 else self.flag.upper().replace("-", "_"))
        return kwargs


def _kind(annotation: Any) -> type:
    """``int | None`` -> int; ``WindowType`` -> WindowType."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def setting_flags() -> tuple[SettingFlag, ...]:
    """Every settings field that is also a flag, in the model's order."""
    flags = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "flag" not in extra:
            continue
        flags.append(SettingFlag(name, str(extra["flag"]), info.description or "",
                                 _kind(info.annotation), bool(extra.get("beam"))))
    return tuple(flags)


class _BooleanFlag(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, and ``--flag=false`` as Flex Templates pass a one-word flag
    (a two-word one gets its underscored spelling for that)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nargs = "?"

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            setattr(namespace, self.dest, False)
            return
        try:
            setattr(namespace, self.dest, True if values is None else _boolean(values))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument {option_string}: {exc}")


def add_setting_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add every setting flag, in both spellings, to an argparse parser or group."""
    for flag in setting_flags():
        kwargs = flag.argparse_kwargs()
        if flag.kind is bool:  # --late-firings / --no-late-firings, and --late_firings=false
            if len(flag.spellings) > 1:
                parser.add_argument(flag.spellings[0], **kwargs)
                parser.add_argument(flag.spellings[1], dest=flag.field, type=_boolean,
                                    default=None, help=argparse.SUPPRESS)
            else:
                parser.add_argument(flag.spellings[0], **{**kwargs, "action": _BooleanFlag})
            continue
        parser.add_argument(*flag.spellings, **kwargs)


def setting_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set (``None`` = not given: the environment's value stands)."""
    return {f.field: getattr(namespace, f.field, None) for f in setting_flags()}


class TxpipeOptions(PipelineOptions):
    """txpipe's settings as Beam pipeline options (``options.view_as(TxpipeOptions)``): what a
    Flex Template passes as ``--window_size=60`` reaches the settings through here."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for flag in setting_flags():
            if flag.beam:  # --project / --region: Beam's own options already
                continue
            kwargs = flag.argparse_kwargs()
            if flag.kind is bool:  # Beam's parser: a value, as Flex Templates pass one
                kwargs.pop("action")
                kwargs["type"] = _boolean
            parser.add_argument(f"--{flag.flag.replace('-', '_')}", **kwargs)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def settings_from_options(options: PipelineOptions) -> dict[str, Any]:
    """Overrides carried by Beam pipeline options (e.g. a Flex Template's parameters)."""
    view = options.view_as(TxpipeOptions).get_all_options(drop_default=True)
    return {f.field: view[f.field] for f in setting_flags() if view.get(f.field) is not None}


def record_settings(options: PipelineOptions, settings: Settings) -> None:
    """Write the effective settings into ``options`` (in place), so a job's pipeline options
    — on the Dataflow console, in an exported template — show what it was built with."""
    view = options.view_as(TxpipeOptions)
    for flag in setting_flags():
        if flag.beam:
            continue
        value = getattr(settings, flag.field)
        setattr(view, flag.field, value.value if isinstance(value, enum.Enum) else value)

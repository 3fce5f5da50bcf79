"""The command line's settings flags, derived from the typed settings (:mod:`txpipe.config`),
never listed by hand a second time.

A settings field that declares a ``flag`` becomes ``--dashed-flag`` on ``run`` /
``export-job`` (``--window-size 60``), beside the environment variable / ``.env`` name it
always had (``WINDOW_SIZE_SECONDS``); the Flex Template knows it as ``window_size``
(:mod:`txpipe.flex_template` translates). Values are validated once, by the settings model.
This module imports no Beam: ``run --help`` and a refused flag answer without it.
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from txpipe.config import Settings


@dataclass(frozen=True)
class SettingFlag:
    field: str  # the settings field (dest)
    flag: str  # dashed name, without the leading --
    help: str
    kind: type  # int, float, str, bool or an Enum
    beam: bool  # Beam defines the option itself (--project, --region)
    label: str  # the Flex Template parameter's label ("" : not a template parameter)

    @property
    def option(self) -> str:
        return f"--{self.flag}"

    @property
    def beam_name(self) -> str:
        """The underscored name Beam's options and Flex Template parameters use."""
        return self.flag.replace("-", "_")

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
                                 _kind(info.annotation), bool(extra.get("beam")),
                                 str(extra.get("label", ""))))
    return tuple(flags)


def add_setting_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add every setting flag to an argparse parser or group (``--late-firings`` /
    ``--no-late-firings`` for a yes-or-no setting)."""
    for flag in setting_flags():
        parser.add_argument(flag.option, **flag.argparse_kwargs())


def setting_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set (``None`` = not given: the environment's value stands)."""
    return {f.field: getattr(namespace, f.field, None) for f in setting_flags()}

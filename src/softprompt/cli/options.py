"""Command-line options derived from the config dataclasses, so the API and the CLI share one set of defaults and
a new method or field needs no hand-written flag.

A field `rank: int = 2` becomes `--rank INT`; `use_scale: bool = True` becomes `--use-scale/--no-use-scale` (or a
renamed flag); the help text is the field's `metadata["help"]` (or its name) plus its default. Options default to
None on the parser, so only what the user typed overrides the dataclass default. Fields marked
`metadata={"cli": False}` (values set by the library, e.g. calibrated stds) get no option.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any


def whole_number(text: str) -> int:
    """An argparse type: an integer that fits in 64 bits (seeds reach torch and numpy, which take no more)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is out of range: at most 19 digits (|value| < 2**63)")
    return value


SCALARS = {"int": whole_number, "float": float, "str": str}


def _kind(annotation: str) -> tuple[str, tuple[str, ...] | None]:
    """'int | None' -> ('int', None); "Literal['a', 'b']" -> ('str', ('a', 'b')); 'bool' -> ('bool', None)."""
    parts = [a.strip() for a in annotation.split("|") if a.strip() != "None"]
    base = parts[0] if parts else "str"
    if base.startswith("Literal[") or base in ("Distribution", "BaseInit"):
        return "str", None  # choices are checked by the config itself (one message, one place)
    return base, None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count, a size, a limit); anything else is a usage error (exit 2)."""
    try:
        value = whole_number(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at most 19 digits, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def fields_of(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    classes: Iterable[type],
    *,
    exclude: Iterable[str] = (),
    rename: dict[str, str] | None = None,
    seen: set[str] | None = None,
) -> set[str]:
    """Add one option per field of `classes` (a field shared by several classes gets one option); returns the
    destinations added."""
    rename, exclude = rename or {}, set(exclude)
    seen = set() if seen is None else seen
    owners: dict[str, list[str]] = {}
    added: dict[str, dataclasses.Field] = {}
    for cls in classes:
        for f in fields_of(cls):
            if f.name in exclude:
                continue
            method = getattr(cls, "method", None)
            owners.setdefault(f.name, []).append(method if isinstance(method, str) and method else cls.__name__)
            added.setdefault(f.name, f)
    for name, f in added.items():
        if name in seen:
            continue
        seen.add(name)
        flag = "--" + rename.get(name, name).replace("_", "-")
        kind, _ = _kind(str(f.type))
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f.metadata.get("help", name.replace("_", " "))
        who = owners[name]
        scope = f" [{', '.join(who)}]" if len(who) < 3 and any(w.islower() for w in who) else ""
        help_text = f"{text}{scope} (default: {default})"
        if kind == "bool":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind.startswith("list["):
            inner = SCALARS.get(kind[5:-1], str)
            parser.add_argument(flag, dest=name, type=inner, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=SCALARS.get(kind, str), default=None, help=help_text)
    return set(added)


def given(args: argparse.Namespace, cls: type, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of `cls` the user set on the command line."""
    exclude = set(exclude)
    return {
        f.name: getattr(args, f.name)
        for f in fields_of(cls)
        if f.name not in exclude and getattr(args, f.name, None) is not None
    }

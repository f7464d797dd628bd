"""`softprompt` command line: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`.

These are the commands on one model and one prompt (train, evaluate, search, serve, store). The experiment commands
(sweep, plot, analyze) drive these and sit one layer above, in softprompt.experiments.commands; the `softprompt`
program (softprompt/__main__.py) offers both.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping

# subcommand -> module (relative to this package). Modules are imported lazily so `--help` stays fast.
COMMANDS = {
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "info": "info",
    "blackbox": "blackbox",
    "serve-lm": "serve_lm",
    "params": "params",
    "registry": "registry",
    "export": "export",
    "serve": "serve",
}


def build_parser(extra: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of this package's commands and of `extra` (subcommand -> absolute module name)."""
    parser = argparse.ArgumentParser(prog="softprompt", description="Tune, store and serve tiny soft prompts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {name: f"softprompt.cli.{module}" for name, module in COMMANDS.items()} | dict(extra or {})
    for name, module in modules.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None, extra: Mapping[str, str] | None = None) -> int:
    args = build_parser(extra).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        # Expected user errors (bad data, wrong model, missing files): one clear line, no traceback.
        print(f"softprompt {args.command}: error: {err}", file=sys.stderr)
        return 2


def print_json(obj: object) -> None:
    print(json.dumps(obj, sort_keys=False, default=float))


if __name__ == "__main__":
    raise SystemExit(main())

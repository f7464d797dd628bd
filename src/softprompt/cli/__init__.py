"""`softprompt` command line: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

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
    "sweep": "sweep",
    "plot": "plot",
    "analyze": "analyze",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softprompt", description="Tune, store and serve tiny soft prompts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(f"softprompt.cli.{module}").add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

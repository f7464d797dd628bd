"""The `softprompt` program: softprompt.cli's commands and the experiment commands that drive them.

python -m softprompt COMMAND ...   (or the `softprompt` script)
"""

from __future__ import annotations

from softprompt.cli import main as cli_main
from softprompt.experiments.commands import COMMANDS as EXPERIMENT_COMMANDS


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, extra=EXPERIMENT_COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())

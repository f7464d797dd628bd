"""The experiment commands: `softprompt sweep`, `plot` and `analyze` (one module each, like softprompt.cli's).

They run grids of softprompt.cli's commands, so they are registered by the program (softprompt/__main__.py), not by
softprompt.cli, which never imports this layer."""

COMMANDS = {name: f"softprompt.experiments.commands.{name}" for name in ("sweep", "plot", "analyze")}

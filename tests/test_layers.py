"""Imports flow one way: models, tasks ← prompts, scoring ← training/blackbox ← api/cli ← experiments.

Read from the source (every `import`, the lazy ones inside functions and those under TYPE_CHECKING included), the
graph between softprompt's top-level modules and packages has no cycle, and the named layers never reach up. Tasks
(data, templates, metrics) know no model and no prompt, so they sit at the bottom with models; prompts take their
`Example` for calibration."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import softprompt

SRC = Path(softprompt.__file__).parent
# lower layers first: a unit may import units of its own or a lower layer only
LAYERS = [{"models", "tasks"}, {"prompts", "scoring"}, {"training", "blackbox"}, {"api", "cli"}, {"experiments"}]


def _unit(module: str) -> str:
    """softprompt.models.causal -> models; softprompt -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module(path: Path) -> str:
    """src/softprompt/models/causal.py -> softprompt.models.causal; a package's __init__.py -> the package."""
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute softprompt module names that the source of `module` imports (relative imports resolved)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return {n for n in names if n == "softprompt" or n.startswith("softprompt.")}


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: [files that import it]}, between distinct top-level units."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = _module(path)
        edges = graph.setdefault(_unit(module), {})
        for name in imported(path.read_text(), module, path.name == "__init__.py"):
            if _unit(name) != _unit(module):
                edges.setdefault(_unit(name), []).append(str(path.relative_to(SRC)))
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        path.append(unit)
        for nxt in sorted(graph.get(unit, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_the_reader_sees_lazy_and_relative_imports():
    # the graph is only as good as the reader: an import inside a function and a relative one both count
    graph = import_graph()
    assert "cli" in graph["experiments"]  # experiments/worker.py runs `softprompt train` lazily, inside execute()
    assert "models" in graph["prompts"]
    source = "import torch\nfrom ..models import inputs\nfrom . import base\n\ndef f():\n    from .bbt import BBT\n"
    assert imported(source, "softprompt.prompts.ulpt") == {
        "softprompt.models", "softprompt.prompts", "softprompt.prompts.bbt"
    }  # fmt: skip
    assert imported("from .inputs import PromptInputs", "softprompt.models", is_package=True) == {
        "softprompt.models.inputs"
    }  # fmt: skip
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None


def test_no_import_cycle_between_top_level_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        hops = [f"{a} -> {b} ({', '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:], strict=False)]
        raise AssertionError("import cycle:\n  " + "\n  ".join(hops))


def test_layers_never_import_upward():
    graph = import_graph()
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    upward = [
        f"{unit} -> {other} ({', '.join(files)})"
        for unit, edges in graph.items()
        for other, files in edges.items()
        if unit in rank and other in rank and rank[other] > rank[unit]
    ]
    assert not upward, "imports from a higher layer:\n  " + "\n  ".join(upward)


def test_the_softprompt_program_offers_both_layers_commands(capsys):
    from softprompt.__main__ import main
    from softprompt.cli import COMMANDS
    from softprompt.experiments.commands import COMMANDS as EXPERIMENT_COMMANDS

    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    module, function = re.search(r'\[project\.scripts\]\s*softprompt = "([\w.]+):(\w+)"', pyproject).groups()
    assert getattr(importlib.import_module(module), function) is main  # the installed `softprompt` is this program
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"    {command}" in listed for command in [*COMMANDS, *EXPERIMENT_COMMANDS])
    assert "sweep" not in COMMANDS  # the lower layer does not know the experiment commands

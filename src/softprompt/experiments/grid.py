"""A sweep's grid file: tasks × models × method blocks (each block's list-valued settings are axes) × seeds.

    name: sst2-ulpt-vs-pt
    out: runs/sweeps/sst2         # the sweep folder (default runs/sweeps/<name>; `--out` wins)
    tasks: [sst2]                 # built-in names, or task files (.yaml/.json, `softprompt train --task-file`)
    models: [smollm2-135m-instruct]
    seeds: [0, 1]
    common: {data_dir: data, steps: 30, max_eval_examples: 200}   # given to every run whose command takes it
    runs:
      - method: ulpt
        rank: [2, 64]             # a list is an axis: one run per value
      - method: prompt_tuning
      - {method: bbt, budget: 300}  # bbt/bbtv2 run `softprompt blackbox` (CMA-ES); others `train` unless
                                    # `optimizer: cmaes` is given
      - method: zero-shot           # the task's bare template, no prompt: `softprompt eval --zero-shot` on the
                                    # same seeded test subset `train` scores (max_test_examples, the run's seed)

Runs go task-major: every block's runs on the first task, then on the next. `order: blocks` makes it block-major
instead (every task of the first block, then of the next), so blocks appended to a running grid run after the rows
already listed are complete; a run's folder name does not depend on the order.

A block may also list `cases:` (dicts of settings taken together, e.g. rank and prompt length at equal parameter
count), crossed with its axes. Settings are the options of `softprompt train` / `softprompt blackbox` with
underscores (`max_eval_examples`, `lr`, `shots`, `budget`, ...); a block's setting the command does not take is an
error, a `common` one is given only to the commands that take it (an error if neither does).

Every run gets a folder name made from its own settings (readable) and a hash of everything it runs with (a task
file's content included), so the name stays the same from one start of the sweep to the next, and a changed setting
or an edited task file gives a new folder. Two runs that compute the same thing are an error before any run starts,
whether a block is listed twice or only spells out a default (`lr: 0.03` on ULPT is ULPT's own lr).

A zero-shot run takes from `common` (and its block) only what means the same to `eval` as to `train`: the data and
model options, and `max_test_examples` / `eval_batch_size` under eval's names `limit` / `batch_size` (train's
`batch_size` is its training batch and is not given). It cannot score own data files (`data`/`test`): name a task
file instead, whose test split both commands read the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COMMANDS = {"gradient": "train", "cmaes": "blackbox", "none": "eval"}
TUNED = ("train", "blackbox")
CMAES_ONLY = ("bbt", "bbtv2")
ZERO_SHOT = "zero-shot"
# What a zero-shot run (`softprompt eval --zero-shot`) takes of the grid's settings: the options both commands read
# the same way, and train's test-subset size and evaluation batch under eval's names.
ZERO_SHOT_SHARED = {"data_dir", "text_column", "text_pair_column", "label_column", "target_column", "template",
                    "verbalizer", "metrics", "max_length", "dtype", "device"}  # fmt: skip
ZERO_SHOT_RENAME = {"max_test_examples": "limit", "eval_batch_size": "batch_size"}
OWN_FILES = ("data", "validation", "test")
TOP_KEYS = {"name", "tasks", "task", "models", "model", "seeds", "common", "runs", "resources", "out", "order"}
ORDERS = ("tasks", "blocks")
BLOCK_KEYS = {"method", "optimizer", "cases", "resources", "label"}
PATH_KEYS = {"data_dir", "data", "validation", "test", "task_file"}
NOT_SETTINGS = {"task", "task_file", "method", "model", "seed", "out", "resume", "overwrite", "quiet", "run", "command"}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything needed to start (or resume) it anywhere softprompt is installed."""

    task: str
    model: str
    method: str
    optimizer: str  # gradient | cmaes | none (zero-shot: nothing is tuned)
    seed: int
    settings: dict[str, Any]  # the block's own settings (what tells this group from the others)
    common: dict[str, Any] = field(default_factory=dict)
    cpus: int = 1
    gpus: float = 0.0
    label: str = ""  # a block's name for its runs in tables and plots (default: method and settings)
    base: str = ""  # the folder relative paths (task files, data_dir, ...) are taken from: the sweep's cwd
    task_digest: str = ""  # a task file's sha256 (its content is part of what the run computes); "" for built-ins

    @property
    def command(self) -> str:
        return COMMANDS[self.optimizer]

    @property
    def task_name(self) -> str:
        return _task_name(self.task)

    @property
    def group(self) -> str:
        """Method and settings in words, without the seed: what the results table groups by."""
        if self.label:
            return self.label
        words = [self.method + (" (cmaes)" if self.optimizer == "cmaes" and self.method not in CMAES_ONLY else "")]
        return " ".join(words + [f"{k}={_text(v)}" for k, v in self.settings.items()])

    @property
    def name(self) -> str:
        """Folder name: readable task, model, method, settings and seed, then a hash of the whole run."""
        parts = [self.task_name, self.model, self.method, *(f"{k}{_text(v)}" for k, v in self.settings.items())]
        if self.optimizer == "cmaes" and self.method not in CMAES_ONLY:
            parts.insert(3, "cmaes")
        slug = re.sub(r"[^A-Za-z0-9.=+-]+", "_", "-".join(parts))[:100]
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{slug}-seed{self.seed}-{digest}"

    def identity(self) -> dict[str, Any]:
        """What the run computes (resources excluded: they change where it runs, not what it gives)."""
        out = asdict(self)
        for key in ("cpus", "gpus", "label", "base"):
            out.pop(key)
        if not self.task_digest:  # built-in tasks: the identity (so the folder name) runs had before digests
            out.pop("task_digest")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)

    def argv(self, out_dir: str | Path) -> list[str]:
        """The `softprompt` command line of this run (without --resume/--overwrite); relative paths made absolute."""
        task = ["--task-file", self._path(self.task)] if _is_task_file(self.task) else ["--task", self.task]
        # A zero-shot run scores the test split only (the worker writes its result); the others train into out_dir.
        what = ["--zero-shot", "--split", "test"] if self.method == ZERO_SHOT else ["--method", self.method]
        argv = [self.command, *what, *task, "--model", self.model, "--seed", str(self.seed)]
        options = command_options(self.command)
        for key, value in {**self.common, **self.settings}.items():
            argv += _flag(options[key], self._path(value) if key in PATH_KEYS else value)
        return [*argv, "--quiet"] if self.method == ZERO_SHOT else [*argv, "--out", str(out_dir), "--quiet"]

    def data_sources(self) -> dict[Path, str]:
        """The data files this run reads, each with what names it (for messages): its own files (`data`/`validation`/
        `test`), those its task file names, or a built-in task's files under the grid's `data_dir` (without one it
        reads the hub or `$SOFTPROMPT_DATA_DIR`, not listed). Only the splits its command reads: a zero-shot run the
        test split, a few-shot run (`shots`, every black-box run) train and test."""
        from softprompt.tasks.base import SPLITS
        from softprompt.tasks.builtin import get_task, local_files
        from softprompt.tasks.custom.spec import load_spec_file

        own = {**self.common, **self.settings}
        if self.method == ZERO_SHOT:
            splits: tuple[str, ...] = ("test",)
        elif self.command == "blackbox" or own.get("shots") is not None:
            splits = ("train", "test")
        else:
            splits = SPLITS
        files = {Path(self._path(own[k])): f"its {k}: {own[k]}" for k in OWN_FILES if isinstance(own.get(k), str)}
        if _is_task_file(self.task):
            spec = load_spec_file(self._path(self.task))  # its data paths, resolved against it
            files |= {Path(getattr(spec, s)): f"named by task file {self.task}" for s in splits if getattr(spec, s)}
        elif isinstance(own.get("data_dir"), str):
            root = Path(self._path(own["data_dir"]))
            named = f"read by task {self.task} under data_dir {own['data_dir']}"
            files |= {root / rel: named for rel in local_files(get_task(self.task), splits)}
        return files

    def _path(self, value: Any) -> Any:
        if not isinstance(value, str) or Path(value).is_absolute() or not self.base:
            return value
        return str(Path(self.base) / value)


def _is_task_file(task: str) -> bool:
    return task.endswith((".yaml", ".yml", ".json"))


def _task_name(task: str) -> str:
    """What tables call a task: a built-in's name, a task file's stem."""
    return Path(task).stem if _is_task_file(task) else task


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _flag(action: argparse.Action, value: Any) -> list[str]:
    """The command-line words that set `action` to `value` (--flag / --no-flag for booleans)."""
    flag = action.option_strings[0]
    if isinstance(value, bool):
        negative = [s for s in action.option_strings if s.startswith("--no-")]
        if value or not negative:
            return [flag] if value else []
        return [negative[0]]
    if value is None:
        return []
    if isinstance(value, list):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def _canonical(settings: dict[str, Any], options: dict[str, argparse.Action]) -> dict[str, Any]:
    """Setting names as the options' destinations: `scale` (the flag --scale) becomes `use_scale`."""
    by_flag = {s[2:].replace("-", "_"): dest for dest, a in options.items() for s in a.option_strings}
    return {key if key in options else by_flag.get(key, key): value for key, value in settings.items()}


@functools.cache
def command_options(command: str) -> dict[str, argparse.Action]:
    """dest -> argparse action of `softprompt COMMAND` (what a grid may set for it; built once per command)."""
    from softprompt.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"}


@dataclass
class Grid:
    name: str
    runs: list[RunSpec]
    source: dict[str, Any]

    @property
    def out(self) -> Path:
        """The sweep folder when the command names none: the grid's `out`, else runs/sweeps/<name>."""
        return Path(self.source.get("out") or Path("runs") / "sweeps" / self.name)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _expand(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Settings dicts of a block: the product of its list-valued settings, crossed with its `cases`."""
    cases = block.get("cases") or [{}]
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError(f"{where}: cases must be a list of mappings (settings taken together)")
    axes = {k: v for k, v in block.items() if k not in BLOCK_KEYS}
    keys = list(axes)
    out = []
    for values in itertools.product(*(_as_list(axes[k]) for k in keys)):
        for case in cases:
            both = set(keys) & set(case)
            if both:
                raise ValueError(f"{where}: {sorted(both)} set both in the block and in its cases")
            out.append({**dict(zip(keys, values, strict=True)), **case})
    return out


def parse_grid(data: dict[str, Any], base: Path | None = None, check_values: bool = True) -> Grid:
    """Expand a grid (the parsed YAML) into runs, checking every setting against its command's options, and (with
    `check_values`, for a grid about to be swept) every run's values as its command would (`_check_values`).

    Relative paths stay as written in the runs' identity (so a folder name does not depend on where the checkout
    is) and are taken from `base` (default: the current folder) when a run starts."""
    base = base or Path.cwd()
    if not isinstance(data, dict):
        raise ValueError("a grid file is a mapping with tasks, models, seeds and runs (see `softprompt sweep --help`)")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ValueError(f"grid: unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    tasks = _as_list(data.get("tasks", data.get("task")))
    models = _as_list(data.get("models", data.get("model", "smollm2-135m-instruct")))
    seeds = _as_list(data.get("seeds", [0]))
    blocks = data.get("runs")
    if not tasks or tasks == [None]:
        raise ValueError("grid: name at least one task (tasks: [sst2])")
    if not models or not seeds:
        raise ValueError(f"grid: {'models' if not models else 'seeds'} is empty: name at least one")
    if "name" in data and not isinstance(data["name"], (str, int)):
        raise ValueError(f"grid: name must be a word (it names the sweep folder), got {data['name']!r}")
    if "out" in data and not isinstance(data["out"], str):
        raise ValueError(f"grid: out must be a folder path, got {data['out']!r}")
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, dict) and "method" in b for b in blocks):
        raise ValueError("grid: runs must be a list of blocks, each with a method")
    if not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"grid: seeds must be integers, got {seeds}")
    order = data.get("order", "tasks")
    if order not in ORDERS:
        raise ValueError(f"grid: order must be one of {list(ORDERS)}, got {order!r}")
    tasks = [str(t) for t in tasks]
    digests = _task_digests(tasks, base)
    common = dict(data.get("common") or {})
    resources = data.get("resources") or {}
    options = {cmd: command_options(cmd) for cmd in COMMANDS.values()}
    for cmd in TUNED:
        common = _canonical(common, options[cmd])
    for key in common:
        if key in NOT_SETTINGS or not any(key in options[cmd] for cmd in TUNED):
            raise ValueError(f"grid common: {key!r} is not an option of softprompt train or blackbox")
    expanded: list[tuple[dict[str, Any], str, str, dict[str, Any], dict[str, Any]]] = []
    for i, block in enumerate(blocks):
        where = f"grid runs[{i}] ({block['method']})"
        method = block["method"]
        if method == ZERO_SHOT:
            expanded += _zero_shot(block, common, resources, where)
            continue
        optimizer = block.get("optimizer", "cmaes" if method in CMAES_ONLY else "gradient")
        if optimizer not in ("gradient", "cmaes"):
            raise ValueError(f"{where}: optimizer must be gradient or cmaes, got {optimizer!r}")
        command = COMMANDS[optimizer]
        method_choices = options[command]["method"].choices
        if method not in method_choices:
            known = sorted({*options["train"]["method"].choices, *options["blackbox"]["method"].choices, ZERO_SHOT})
            if method not in known:
                raise ValueError(f"{where}: unknown method {method!r}; a grid's methods: {', '.join(known)}")
            raise ValueError(f"{where}: softprompt {command} does not run method {method!r} ({sorted(method_choices)})")
        res = {**resources, **(block.get("resources") or {})}
        for settings in _expand(block, where):
            settings = _canonical(settings, options[command])
            bad = [k for k in settings if k in NOT_SETTINGS or k not in options[command]]
            if bad:
                raise ValueError(f"{where}: softprompt {command} has no option {', '.join(map(repr, bad))}")
            own_common = {k: v for k, v in common.items() if k in options[command] and k not in settings}
            expanded.append((block, method, optimizer, settings, {"common": own_common, **res}))
    ordered = _ordered(tasks, models, expanded, seeds, order)
    runs = [
        RunSpec(
            task=task,
            model=str(model),
            method=method,
            optimizer=optimizer,
            seed=seed,
            settings=settings,
            common=extra["common"],
            cpus=int(extra.get("cpus", 1)),
            gpus=float(extra.get("gpus", 0)),
            label=str(block.get("label", "")),
            base=str(base.resolve()),
            task_digest=digests.get(task, ""),
        )
        for task, model, (block, method, optimizer, settings, extra), seed in ordered
    ]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("grid: two runs have the same settings (a block or value is listed twice)")
    if check_values:
        _check_files(runs)
        _check_values(runs)
    return Grid(str(data.get("name", "sweep")), runs, data)


def _task_digests(tasks: list[str], base: Path) -> dict[str, str]:
    """sha256 of each task file (an edited file gives its runs new folders); built-in names checked to exist. Two
    tasks the tables would call by the same name (`a/task.yaml`, `b/task.yaml`) are an error."""
    from softprompt.tasks.builtin import get_task

    digests, names = {}, {}
    for task in tasks:
        if _is_task_file(task):
            path = Path(task) if Path(task).is_absolute() else base / task
            if not path.is_file():
                raise ValueError(f"grid: task file {task} not found (relative paths are from {base})")
            digests[task] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            get_task(task)  # an unknown name: ValueError listing the built-in tasks
        name = _task_name(task)
        if name in names:
            raise ValueError(f"grid: tasks {names[name]} and {task} would both be called {name!r} in the tables; "
                             "rename one of the files")  # fmt: skip
        names[name] = task
    return digests


def _check_files(runs: list[RunSpec]) -> None:
    """The files and folders the runs read exist (a data folder, own data files, the files a task file names, a
    built-in task's files under the data folder), so a typo stops the grid before any run starts instead of failing
    every run that has it."""
    seen: set[Path] = set()
    for run in runs:
        where = f"grid run {run.name}"
        data_dir = {**run.common, **run.settings}.get("data_dir")
        if isinstance(data_dir, str) and not Path(run._path(data_dir)).is_dir():
            raise ValueError(f"{where}: data_dir {data_dir}: no such folder (relative paths are from {run.base})")
        for path, named in run.data_sources().items():
            if path not in seen and not path.is_file():
                raise ValueError(f"{where}: no such file {path} ({named}; relative paths are from {run.base})")
            seen.add(path)


def _check_values(runs: list[RunSpec]) -> None:
    """Parse every run's command line now and run its command's own check of the settings (`check` of
    softprompt train / blackbox: method and training or search configs), so a bad value (`dtype: bogus`, `steps: ten`,
    `steps: -5`, `rank: 0`) stops the grid before any run starts instead of failing every run that has it, hours
    into a sweep."""
    from softprompt.cli import build_parser

    parser = build_parser()
    checked: dict[str, str] = {}  # a run's settings -> what its command computes with them (`_computes`)
    computed: dict[tuple[Any, ...], RunSpec] = {}  # (task, model, seed, what is computed) -> the first run of it
    for run in runs:
        stderr = io.StringIO()
        where = f"grid run {run.name} (softprompt {run.command})"
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(run.argv(Path(run.base or ".") / run.name))
        except SystemExit:
            last = (stderr.getvalue().strip().splitlines() or ["the command line does not parse"])[-1]
            reason = last.removeprefix(f"softprompt {run.command}: error: ")  # argparse's own prefix
            raise ValueError(f"{where}: {reason}") from None
        settings = json.dumps([run.command, run.method, run.optimizer, run.settings, run.common], sort_keys=True)
        if settings not in checked:  # seeds and tasks do not change what is checked
            try:
                checked[settings] = _computes(args)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {err}") from None
        key = (run.task, run.task_digest, run.model, run.seed, checked[settings])
        first = computed.setdefault(key, run)
        if first is not run:
            raise ValueError(
                f"grid: runs {first.name} and {run.name} compute the same thing (a setting given its default value "
                "is the same run as one without it); list it once"
            )


def _computes(args: argparse.Namespace) -> str:
    """What a parsed run computes, as comparable text: the configs its command's `check` makes (defaults filled in,
    the method's own lr included) and every other option's value (argparse fills their defaults), so `lr: 0.03` on
    ULPT is the same run as no lr."""
    configs: Any = args.check(args) if hasattr(args, "check") else ()
    configs = list(configs) if isinstance(configs, tuple) else [configs]
    held: set[str] = set()
    for config in configs:  # their fields, and those of a config inside one (a search's prompt config)
        for name in config.__dataclass_fields__:
            held |= {name} | _fields(getattr(config, name))
    held |= {"out", "quiet", "resume", "overwrite", "run", "check", "command"}  # where it goes, not what it computes
    rest = {k: v for k, v in vars(args).items() if k not in held}
    return json.dumps([[type(c).__name__, asdict(c)] for c in configs] + [rest], sort_keys=True, default=str)


def _fields(value: Any) -> set[str]:
    return set(getattr(value, "__dataclass_fields__", ()))


def _ordered(tasks: list[str], models: list[Any], expanded: list[Any], seeds: list[int], order: str) -> list[tuple]:
    """(task, model, expanded block run, seed) in the grid's order: task-major, or block-major."""
    if order == "blocks":
        return [(t, m, e, s) for e in expanded for t in tasks for m in models for s in seeds]
    return [(t, m, e, s) for t in tasks for m in models for e in expanded for s in seeds]


def _zero_shot_settings(settings: dict[str, Any], where: str, strict: bool) -> dict[str, Any]:
    """Train's names of the settings a zero-shot run takes, as eval's (others: an error if `strict`, else left out)."""
    own = sorted(k for k in settings if k in OWN_FILES)
    if own:
        raise ValueError(f"{where}: zero-shot scores a task's test split; own files ({', '.join(own)}) cannot be "
                         "split as train splits them: use a task file (tasks: [my_task.yaml])")  # fmt: skip
    bad = [k for k in settings if k not in ZERO_SHOT_SHARED and k not in ZERO_SHOT_RENAME]
    if strict and bad:
        raise ValueError(f"{where}: a zero-shot run has no option {', '.join(map(repr, bad))} (it trains nothing)")
    return {ZERO_SHOT_RENAME.get(k, k): v for k, v in settings.items() if k not in bad}


def _zero_shot(
    block: dict[str, Any], common: dict[str, Any], resources: dict[str, Any], where: str
) -> list[tuple[dict[str, Any], str, str, dict[str, Any], dict[str, Any]]]:
    """A zero-shot block's runs: `softprompt eval --zero-shot` with the settings that mean the same as train's."""
    if block.get("optimizer", "none") != "none":
        raise ValueError(f"{where}: a zero-shot run has no optimizer")
    res = {**resources, **(block.get("resources") or {})}
    train = command_options("train")
    out = []
    for settings in _expand(block, where):
        settings = _zero_shot_settings(_canonical(settings, train), where, strict=True)
        own_common = {k: v for k, v in _zero_shot_settings(common, where, strict=False).items() if k not in settings}
        out.append((block, ZERO_SHOT, "none", settings, {"common": own_common, **res}))
    return out


def load_grid(path: str | Path) -> Grid:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    grid = parse_grid(data, Path.cwd())
    if "name" not in (data or {}):
        grid.name = path.stem
    return grid

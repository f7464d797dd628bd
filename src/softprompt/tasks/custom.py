"""Bring your own task: classification or generation from your own CSV, TSV, JSONL or Parquet files.

    spec = CustomTaskSpec(train="reviews.csv", text_column="review", label_column="sentiment")
    task, train, validation, test = build_custom_task(spec)

Classification when a label column is named (labels = the distinct train labels, sorted; verbalizer " " + label),
generation when a target column is named (metrics exact_match and token_f1). Missing validation/test splits are
carved from train with a fixed seed. The Task keeps what `predict` needs (template, labels, verbalizer); how the
files were read (columns, encodings, carve, sizes) goes to `task.split_info["custom"]`, so a saved artifact can
re-read the same files, or score new files with the same columns, without the spec.

Every bad row is a `DataError` naming file, line/row and column. Recoverable oddities (a file that is not UTF-8)
are `DataWarning`s; the CLI prints them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import string
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from softprompt.tasks.base import SPLITS, DataError, Example, Task
from softprompt.tasks.fewshot import split_off
from softprompt.tasks.labels import check_classes, label_map
from softprompt.tasks.metrics import ALIASES
from softprompt.tasks.readers import (
    USER_ENCODINGS,
    Table,
    check_unique_columns,
    decode,
    location,
    parse_delimited,
    parse_jsonl,
)

PathLike = str | os.PathLike[str]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "matthews_corrcoef")
GENERATION_METRICS = ("exact_match", "token_f1")
# Where each column comes from, for messages that tell the user what to change.
COLUMN_FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column",
                "target": "--target-column"}  # fmt: skip


class DataWarning(UserWarning):
    """Something in a data file was odd but handled (a fallback encoding); the CLI prints these."""


# ---------------------------------------------------------------- the spec


@dataclass
class CustomTaskSpec:
    """What the user says about their files. Paths in a task file are relative to that file."""

    train: str | None = None
    validation: str | None = None  # default: carved from train
    test: str | None = None  # default: carved from train
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str | None = None  # classification
    target_column: str | None = None  # generation
    template: str | None = None  # default: "{text}\nLabel:" ("{text}\n{text_pair}\n..." for pairs; "Answer:" for gen.)
    verbalizer: dict[str, str] | None = None  # label -> word; default: " " + label for each train label
    metrics: list[str] | None = None
    name: str | None = None  # default: "custom:<train file name>"
    seed: int = 0  # seed of the validation/test carve (fixed, independent of the training seed)
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    # Put before each generation target, as default verbalizer words start with a space (a BPE word boundary).
    # Default: " ", or "" when the template already ends in whitespace.
    target_prefix: str | None = None
    format: str | None = None  # csv | tsv | jsonl | parquet; default: from the file extension
    encoding: str | None = None  # default: utf-8, else utf-8-sig, cp1252, latin-1 (with a warning)
    allow_overlap: bool = False  # a validation/test file that is the training file is an error unless this is set

    @property
    def kind(self) -> str:
        return "generation" if self.target_column else "classification"

    @property
    def columns(self) -> dict[str, str]:
        """role -> column name, for the columns in use."""
        named = {"text": self.text_column, "text_pair": self.text_pair_column}
        named |= {"target": self.target_column} if self.target_column else {"label": self.label_column}
        return {role: col for role, col in named.items() if col}

    def merged(self, **overrides: Any) -> CustomTaskSpec:
        """A copy with every override that is not None applied (CLI flags over a task file)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "task definition") -> CustomTaskSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("verbalizer"), dict):  # YAML reads `1: " World"` with an int key; labels are text
            d["verbalizer"] = {str(k): str(v) for k, v in d["verbalizer"].items()}
        if isinstance(d.get("metrics"), str):
            d["metrics"] = [d["metrics"]]
        return cls(**d)


def load_spec_file(path: PathLike) -> CustomTaskSpec:
    """A spec from a YAML (.yaml/.yml, needs pyyaml) or JSON file; its relative data paths are resolved against it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise DataError(f"{path}: reading YAML needs pyyaml (pip install pyyaml), or write the file as JSON") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"{path}: invalid YAML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for split in SPLITS:
        if data.get(split):
            data[split] = str(path.parent / Path(data[split]).expanduser())
    return CustomTaskSpec.from_dict(data, where=str(path))


def parse_verbalizer(pairs: list[str]) -> dict[str, str]:
    """`label=word` pairs (from the CLI) -> {label: word}. The word is kept as is, leading space included."""
    out: dict[str, str] = {}
    for pair in pairs:
        label, eq, word = pair.partition("=")
        if not eq or not label.strip():
            raise ValueError(f"--verbalizer takes LABEL=WORD pairs, got {pair!r}")
        if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":  # quotes that reached us literally
            word = word[1:-1]
        if not word.strip():
            raise ValueError(f"--verbalizer: empty word for label {label.strip()!r}")
        out[label.strip()] = word
    return out


# ---------------------------------------------------------------- reading files


@dataclass
class DataFile:
    """One file's rows as (location, record) pairs; locations read "train.csv:17 (row 16)"."""

    name: str  # as the user gave it, for messages
    path: str  # absolute, for the record
    format: str
    encoding: str
    columns: list[str] | None  # the header (None for JSONL, whose rows may differ)
    rows: list[tuple[str, dict[str, Any]]] = field(repr=False)
    sha256: str = ""


def _read_parquet(path: Path, name: str) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        table = pq.read_table(path)
        check_unique_columns(table.column_names, name)  # to_pylist would keep one of two same-named columns
        records, columns = table.to_pylist(), list(table.column_names)
    else:
        try:
            import pandas as pd

            frame = pd.read_parquet(path)  # needs pyarrow or fastparquet itself
        except ImportError as e:
            raise DataError(
                f"{name}: reading Parquet needs pyarrow: pip install pyarrow (or convert the file to CSV or JSONL)"
            ) from e
        records, columns = frame.to_dict("records"), [str(c) for c in frame.columns]
        check_unique_columns(columns, name)
    return Table(name, "parquet", [(location(name, None, i), rec) for i, rec in enumerate(records, 1)], columns)


def _parse_text(data: bytes, name: str, fmt: str, encoding: str | None) -> Table:
    """A CSV, TSV or JSONL file by the shared readers; a fallback encoding is a `DataWarning`."""
    text = decode(data, name, (encoding,) if encoding else USER_ENCODINGS)
    if text.fallback:
        warnings.warn(
            f"{text.fallback}; decoded the file as {text.encoding} "
            "-- check that accented characters look right, or set `encoding` in the task file",
            DataWarning,
            stacklevel=2,
        )
    if fmt == "jsonl":
        return parse_jsonl(text, row_numbers=True)
    return parse_delimited(text, fmt, row_numbers=True)  # the header line is required


def read_file(path: PathLike, fmt: str | None = None, encoding: str | None = None) -> DataFile:
    """Any supported file as rows of records; the format comes from the extension unless `fmt` is given."""
    name, path = str(path), Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt not in set(FORMATS.values()):
        raise DataError(
            f"{name}: unknown format {fmt or path.suffix or '(no extension)'!r}; expected one of "
            f"{', '.join(FORMATS)} (or set `format` in the task file)"
        )
    data = path.read_bytes()
    table = _read_parquet(path, name) if fmt == "parquet" else _parse_text(data, name, fmt, encoding)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return DataFile(name, str(path.resolve()), fmt, table.encoding, table.columns, table.rows, digest)


# ---------------------------------------------------------------- rows -> examples


@dataclass(frozen=True)
class _Row:
    loc: str
    text: str
    text_pair: str | None
    answer: str  # the raw label value (classification) or the target text (generation)


def _missing_column(loc: str, role: str, column: str, available: list[str]) -> DataError:
    hint = " (is the file really comma-separated?)" if len(available) == 1 and ";" in available[0] else ""
    return DataError(
        f"{loc}: no column {column!r} (set by {COLUMN_FLAGS[role]}); "
        f"available columns: {', '.join(map(repr, available))}{hint}"
    )


def _value(record: dict[str, Any], role: str, column: str, loc: str) -> str:
    if column not in record:
        raise _missing_column(loc, role, column, list(record))
    value = record[column]
    if hasattr(value, "item") and not isinstance(value, str):  # a numpy scalar (pandas) -> a Python value
        value = value.item()
    if isinstance(value, bool):
        value = json.dumps(value)  # JSON true/false -> "true"/"false", as the built-in tasks read them
    elif isinstance(value, int | float) and value == value:  # NaN (a missing Parquet value) counts as empty
        value = str(value)
    if value is None or value != value or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{loc}, column {column!r}: empty {role.replace('_', ' ')}")
    if not isinstance(value, str):
        raise DataError(f"{loc}, column {column!r}: expected text, got {type(value).__name__} {value!r}")
    return value.strip()


def _rows(file: DataFile, spec: CustomTaskSpec) -> list[_Row]:
    columns = spec.columns
    if file.columns is not None:  # check the header once, before any row
        for role, column in columns.items():
            if column not in file.columns:
                raise _missing_column(f"{file.name} (header)", role, column, file.columns)
    answer_role = "target" if spec.target_column else "label"
    return [
        _Row(
            loc,
            _value(rec, "text", columns["text"], loc),
            _value(rec, "text_pair", columns["text_pair"], loc) if "text_pair" in columns else None,
            _value(rec, answer_role, columns[answer_role], loc),
        )
        for loc, rec in file.rows
    ]


def _label_order(values: set[str]) -> list[str]:
    """Numbers numerically ("2" before "10"), anything else alphabetically."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _examples(rows: list[_Row], task: Task, column: str, prefix: str, unknown: str) -> list[Example]:
    """Rows as examples: targets get `prefix`; a label outside task.labels is an error ending in `unknown`."""
    if task.kind == "generation":
        return [Example(r.text, r.text_pair, target=prefix + r.answer, source=r.loc) for r in rows]
    index = {label: i for i, label in enumerate(task.labels)}
    for r in rows:
        if r.answer not in index:
            raise DataError(f"{r.loc}, column {column!r}: label {r.answer!r} {unknown}")
    return [Example(r.text, r.text_pair, label=index[r.answer], source=r.loc) for r in rows]


def _template(spec: CustomTaskSpec) -> str:
    if spec.template is not None:
        return spec.template
    answer = "Answer:" if spec.kind == "generation" else "Label:"
    return "{text}\n{text_pair}\n" + answer if spec.text_pair_column else "{text}\n" + answer


def _answer_prefix(spec: CustomTaskSpec, template: str) -> str:
    """What goes between the template and a default label word or a target: a space, unless the template has one."""
    if spec.target_prefix is not None:
        return spec.target_prefix
    return "" if template[-1:].isspace() else " "


def _check_columns(spec: CustomTaskSpec) -> None:
    """The model reads only the text columns: one that is also the answer would hand it the answer."""
    columns = spec.columns
    answer = "target" if spec.target_column else "label"
    for role in ("text", "text_pair"):
        if role in columns and columns[role] == columns.get(answer):
            raise DataError(f"column {columns[role]!r} is both the {role.replace('_', ' ')} ({COLUMN_FLAGS[role]}) and "
                            f"the {answer} ({COLUMN_FLAGS[answer]}): the model would read the answer")  # fmt: skip
    if columns.get("text_pair") == columns["text"]:
        raise DataError(f"column {columns['text']!r} is both the text and the text pair; name two different columns")


def _check_overlap(files: dict[str, DataFile], allow: bool) -> None:
    """A validation or test file with the training file's content scores the model on what it trained on."""
    for split in ("validation", "test"):
        if split in files and files[split].sha256 == files["train"].sha256:
            same = "is" if files[split].path == files["train"].path else "has the same content as"
            message = f"the {split} file {files[split].name} {same} the training file {files['train'].name}"
            if not allow:
                raise DataError(f"{message}: its scores would be scores on training data; pass a separate "
                                "file, leave it out to carve one, or allow it with --allow-overlap")  # fmt: skip
            warnings.warn(f"{message} (allowed): its scores are on training data", DataWarning, stacklevel=3)


def _normalise_labels(rows: dict[str, list[_Row]], known: list[str] | None, train_name: str) -> dict[str, list[_Row]]:
    """Rows whose label spellings are merged into one class each (labels.py), with a warning listing the merges."""
    train = [r.answer for r in rows.get("train", [])]
    others = [r.answer for split, rs in rows.items() if split != "train" for r in rs]
    labels = label_map(train, others, known)
    if labels.merges:
        warnings.warn(f"{train_name}: label spellings merged into one class each: {labels.describe()}",
                      DataWarning, stacklevel=3)  # fmt: skip
    return {split: [replace(r, answer=labels[r.answer]) for r in rs] for split, rs in rows.items()}


def _check_spec(spec: CustomTaskSpec, template: str) -> None:
    if spec.label_column and spec.target_column:
        raise DataError("name either a label column (classification) or a target column (generation), not both")
    if not spec.label_column and not spec.target_column:
        raise DataError("name the label column (--label-column) or, for generation, the answer (--target-column)")
    _check_columns(spec)
    try:
        placeholders = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise DataError(f"template {template!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    if placeholders - {"text", "text_pair"}:
        raise DataError(f"template {template!r}: only {{text}} and {{text_pair}} can be filled in, "
                        f"not {sorted(placeholders - {'text', 'text_pair'})}")  # fmt: skip
    if "text" not in placeholders:
        raise DataError(f"template {template!r} must contain {{text}}")
    if "text_pair" in placeholders and not spec.text_pair_column:
        raise DataError(f"template {template!r} uses {{text_pair}}: name its column with --text-pair-column")
    if spec.text_pair_column and "text_pair" not in placeholders:
        raise DataError(f"template {template!r} does not use {{text_pair}}, but a text pair column is named")
    allowed = GENERATION_METRICS if spec.kind == "generation" else CLASSIFICATION_METRICS
    for metric in spec.metrics or ():
        if ALIASES.get(metric, metric) not in allowed:
            raise DataError(f"metric {metric!r} does not fit a {spec.kind} task; choose from {list(allowed)}")


def _with_loaders(task: Task, splits: Callable[[], dict[str, list[Example]]]) -> Task:
    """Let `task.load(split)` return the custom splits, whatever data dir is passed (the files are in the spec)."""
    task.loaders = {s: (lambda _root, s=s: splits()[s]) for s in SPLITS}
    task.hub_loaders = {s: (lambda s=s: splits()[s]) for s in SPLITS}
    return task


def build_custom_task(spec: CustomTaskSpec) -> tuple[Task, list[Example], list[Example], list[Example]]:
    """The task and its train, validation and test examples; missing splits are carved from train (seeded)."""
    if not spec.train:
        raise DataError("no training file: pass --data FILE (or `train:` in the task file)")
    template = _template(spec)
    _check_spec(spec, template)
    read = functools.cache(lambda p: read_file(p, spec.format, spec.encoding))  # one read if a path repeats
    files = {s: read(getattr(spec, s)) for s in SPLITS if getattr(spec, s)}
    _check_overlap(files, spec.allow_overlap)
    rows = {s: _rows(f, spec) for s, f in files.items()}
    train_name = files["train"].name
    if spec.kind == "classification":
        rows = _normalise_labels(rows, list(spec.verbalizer) if spec.verbalizer is not None else None, train_name)
        check_classes((r.answer for r in rows["train"]), train_name)

    prefix = _answer_prefix(spec, template)
    if spec.kind == "generation":
        labels, words = (), ()
        metrics = tuple(spec.metrics or GENERATION_METRICS)
    else:
        if spec.verbalizer is not None:
            verbalizer = spec.verbalizer
        else:
            verbalizer = {label: prefix + label for label in _label_order({r.answer for r in rows["train"]})}
        labels, words = tuple(verbalizer), tuple(verbalizer.values())
        metrics = tuple(spec.metrics or ("accuracy", "macro_f1"))
        missing = set(labels) - {r.answer for r in rows["train"]}
        if missing:
            warnings.warn(f"{train_name}: no training rows with label(s) {sorted(missing)}", DataWarning, stacklevel=2)
    # What was actually used, with absolute paths, so the task can re-read its files from anywhere.
    final = spec.merged(template=template, metrics=list(metrics), target_prefix=prefix,
                        **{s: f.path for s, f in files.items()})  # fmt: skip
    final.verbalizer = dict(zip(labels, words, strict=True)) if spec.kind == "classification" else None
    task = Task(
        name=spec.name or f"custom:{Path(spec.train).name}",
        template=template,
        kind=spec.kind,  # type: ignore[arg-type]
        labels=labels,
        verbalizer=words,
        metrics=metrics,
    )
    answer_column = spec.target_column or spec.label_column or ""
    if spec.verbalizer is not None:
        unknown = f"is not in the verbalizer {spec.verbalizer}"
    else:  # labels came from train, so only a validation/test row can miss
        unknown = f"is not in the training file {train_name}; its labels: {list(labels)}"
    examples = {s: _examples(r, task, answer_column, prefix, unknown) for s, r in rows.items()}

    carve: dict[str, int] = {}
    rest = examples["train"]
    for split, fraction in (("test", spec.test_fraction), ("validation", spec.validation_fraction)):
        if split not in examples:
            n = max(1, round(fraction * len(examples["train"])))
            if len(rest) - n < 1:
                size = len(examples["train"])
                raise DataError(f"{train_name}: {size} rows are too few to carve a {split} split; pass a {split} file")
            rest, examples[split] = split_off(rest, n, spec.seed)
            carve[split] = n
    examples["train"] = rest

    task.split_info = {
        "custom": final.to_dict(),
        "files": {
            s: {"path": f.path, "format": f.format, "encoding": f.encoding, "rows": len(f.rows), "sha256": f.sha256}
            for s, f in files.items()
        },
        "sizes": {s: len(examples[s]) for s in SPLITS},
    }
    if carve:
        task.split_info["carve"] = {"from": files["train"].path, "held_out": carve, "seed": spec.seed}
    _with_loaders(task, lambda: examples)
    return task, examples["train"], examples["validation"], examples["test"]


# ---------------------------------------------------------------- a stored task on files


def spec_from_task(task: Task) -> CustomTaskSpec | None:
    """The spec a custom task was built from, with the task's own template and verbalizer (None if not custom)."""
    stored = task.split_info.get("custom")
    if stored is None:
        return None
    spec = CustomTaskSpec.from_dict(dict(stored), where=f"task {task.name!r}")
    verbalizer = dict(zip(task.labels, task.verbalizer, strict=True)) if task.kind == "classification" else None
    return spec.merged(template=task.template, verbalizer=verbalizer, metrics=list(task.metrics))


def read_examples(task: Task, path: PathLike, spec: CustomTaskSpec | None = None) -> list[Example]:
    """Every row of one file as examples of an existing task (e.g. a loaded artifact's), with the task's labels.

    Columns come from `spec`, else from the spec the task was built from (a built-in task needs `spec`).
    """
    spec = spec or spec_from_task(task)
    if spec is None:
        raise DataError(f"task {task.name!r} was not built from files: name the columns (--text-column, ...)")
    generation = task.kind == "generation"
    answer, flag = ("target_column", "--target-column") if generation else ("label_column", "--label-column")
    if not getattr(spec, answer) or spec.kind != task.kind:
        raise DataError(f"task {task.name!r} is a {task.kind} task: name its answer column with {flag} (only)")
    if "{text_pair}" in task.template and not spec.text_pair_column:
        raise DataError(f"task {task.name!r} scores text pairs: name the second column with --text-pair-column")
    file = read_file(path, spec.format, spec.encoding)
    rows = _rows(file, spec)
    if not generation:  # spellings of the task's labels are those labels (with a warning)
        rows = _normalise_labels({"file": rows}, list(task.labels), file.name)["file"]
    # verbalizer=None: an unknown label is reported against the task's labels, not a verbalizer
    unknown = f"is not one of the task's labels {list(task.labels)}"
    return _examples(rows, task, getattr(spec, answer), _answer_prefix(spec, task.template), unknown)


def with_file_loaders(task: Task) -> Task:
    """A stored custom task (no loaders) that re-reads its recorded files, and re-carves, when a split is loaded."""
    spec = spec_from_task(task)
    if spec is None or task.loaders:
        return task

    @functools.cache
    def splits() -> dict[str, list[Example]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # already reported when the task was built
            rebuilt, *parts = build_custom_task(spec)
        for split, entry in task.split_info.get("files", {}).items():
            now = rebuilt.split_info["files"].get(split, {}).get("sha256")
            if now != entry.get("sha256"):
                warnings.warn(f"{entry.get('path')} changed since the task was built; splits may differ",
                              DataWarning, stacklevel=2)  # fmt: skip
        return dict(zip(SPLITS, parts, strict=True))

    return _with_loaders(task, splits)

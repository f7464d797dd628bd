"""What the user says about their own files: the `CustomTaskSpec`, from command-line flags or a task file, checked.

    CustomTaskSpec(train="reviews.csv", text_column="review", label_column="sentiment")

Classification when a label column is named, generation when a target column is named. `check_spec` refuses a spec
that cannot work (both answer columns or neither, a template without {text} or with other fields, a metric of the
other kind) before any file is read; `template_for` and `answer_prefix` are the defaults a spec leaves open.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from softprompt.tasks.base import SPLITS, DataError
from softprompt.tasks.metrics import ALIASES

PathLike = str | os.PathLike[str]

CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "matthews_corrcoef")
GENERATION_METRICS = ("exact_match", "token_f1")
# Where each column comes from, for messages that tell the user what to change.
COLUMN_FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column",
                "target": "--target-column"}  # fmt: skip


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


def template_for(spec: CustomTaskSpec) -> str:
    if spec.template is not None:
        return spec.template
    answer = "Answer:" if spec.kind == "generation" else "Label:"
    return "{text}\n{text_pair}\n" + answer if spec.text_pair_column else "{text}\n" + answer


def answer_prefix(spec: CustomTaskSpec, template: str) -> str:
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


def check_spec(spec: CustomTaskSpec, template: str) -> None:
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

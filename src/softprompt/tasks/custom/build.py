"""Building a user's task from a spec: read the files, settle labels and template, carve the missing splits.

    task, train, validation, test = build_custom_task(spec)

Missing validation/test splits are carved from train with the spec's fixed seed by the same `carve` the built-in
tasks use (tasks/fewshot.py). The Task keeps what `predict` needs (template, labels, verbalizer); how the files were
read (columns, encodings, carve, sizes) goes to `task.split_info["custom"]`, so a saved artifact can re-read the
same files (`with_file_loaders`), or score new files with the same columns (`read_examples`), without the spec.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from softprompt.tasks.base import SPLITS, DataError, DataWarning, Example, Task
from softprompt.tasks.custom.files import DataFile, PathLike, Row, read_file, read_rows
from softprompt.tasks.custom.labels import to_examples, unknown_label, verbalizer_for
from softprompt.tasks.custom.spec import GENERATION_METRICS, CustomTaskSpec, answer_prefix, check_spec, template_for
from softprompt.tasks.fewshot import carve
from softprompt.tasks.labels import check_classes, label_map


def _with_loaders(task: Task, splits: Callable[[], dict[str, list[Example]]]) -> Task:
    """Let `task.load(split)` return the custom splits, whatever data dir is passed (the files are in the spec)."""
    task.loaders = {s: (lambda _root, s=s: splits()[s]) for s in SPLITS}
    task.hub_loaders = {s: (lambda s=s: splits()[s]) for s in SPLITS}
    return task


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


def _normalise_labels(rows: dict[str, list[Row]], known: list[str] | None, train_name: str) -> dict[str, list[Row]]:
    """Rows whose label spellings are merged into one class each (tasks/labels.py), with a warning listing merges."""
    train = [r.answer for r in rows.get("train", [])]
    others = [r.answer for split, rs in rows.items() if split != "train" for r in rs]
    labels = label_map(train, others, known)
    if labels.merges:
        warnings.warn(f"{train_name}: label spellings merged into one class each: {labels.describe()}",
                      DataWarning, stacklevel=3)  # fmt: skip
    return {split: [replace(r, answer=labels[r.answer]) for r in rs] for split, rs in rows.items()}


def build_custom_task(spec: CustomTaskSpec) -> tuple[Task, list[Example], list[Example], list[Example]]:
    """The task and its train, validation and test examples; missing splits are carved from train (seeded)."""
    if not spec.train:
        raise DataError("no training file: pass --data FILE (or `train:` in the task file)")
    template = template_for(spec)
    check_spec(spec, template)
    read = functools.cache(lambda p: read_file(p, spec.format, spec.encoding))  # one read if a path repeats
    files = {s: read(getattr(spec, s)) for s in SPLITS if getattr(spec, s)}
    _check_overlap(files, spec.allow_overlap)
    rows = {s: read_rows(f, spec) for s, f in files.items()}
    train_name = files["train"].name
    if spec.kind == "classification":
        rows = _normalise_labels(rows, list(spec.verbalizer) if spec.verbalizer is not None else None, train_name)
        check_classes((r.answer for r in rows["train"]), train_name)

    prefix = answer_prefix(spec, template)
    if spec.kind == "generation":
        verbalizer = None
        labels, words = (), ()
        metrics = tuple(spec.metrics or GENERATION_METRICS)
    else:
        verbalizer = verbalizer_for(spec, rows["train"], prefix, train_name)
        labels, words = tuple(verbalizer), tuple(verbalizer.values())
        metrics = tuple(spec.metrics or ("accuracy", "macro_f1"))
    # What was actually used, with absolute paths, so the task can re-read its files from anywhere.
    final = spec.merged(template=template, metrics=list(metrics), target_prefix=prefix,
                        **{s: f.path for s, f in files.items()})  # fmt: skip
    final.verbalizer = verbalizer
    task = Task(
        name=spec.name or f"custom:{Path(spec.train).name}",
        template=template,
        kind=spec.kind,  # type: ignore[arg-type]
        labels=labels,
        verbalizer=words,
        metrics=metrics,
    )
    answer_column = spec.target_column or spec.label_column or ""
    unknown = unknown_label(spec, train_name, labels)
    examples = {s: to_examples(r, task, answer_column, prefix, unknown) for s, r in rows.items()}

    total = len(examples["train"])
    fractions = {"test": spec.test_fraction, "validation": spec.validation_fraction}
    held_out = {s: max(1, round(f * total)) for s, f in fractions.items() if s not in examples}
    if held_out:
        try:
            examples |= carve(examples["train"], held_out, spec.seed)
        except ValueError as e:
            raise DataError(f"{train_name}: {e}; pass the held-out split(s) as files") from None

    task.split_info = {
        "custom": final.to_dict(),
        "files": {
            s: {"path": f.path, "format": f.format, "encoding": f.encoding, "rows": len(f.rows), "sha256": f.sha256}
            for s, f in files.items()
        },
        "sizes": {s: len(examples[s]) for s in SPLITS},
    }
    if held_out:
        task.split_info["carve"] = {"from": files["train"].path, "held_out": held_out, "seed": spec.seed}
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
    rows = read_rows(file, spec)
    if not generation:  # spellings of the task's labels are those labels (with a warning)
        rows = _normalise_labels({"file": rows}, list(task.labels), file.name)["file"]
    # an unknown label is reported against the task's labels, not a verbalizer
    unknown = f"is not one of the task's labels {list(task.labels)}"
    return to_examples(rows, task, getattr(spec, answer), answer_prefix(spec, task.template), unknown)


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

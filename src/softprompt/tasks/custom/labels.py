"""Labels of a user's classification task: which labels, in what order, with which words, and rows -> examples.

Labels are the distinct training labels, numbers in numeric order ("2" before "10"), anything else alphabetically;
each label's word is " " + label (the answer prefix) unless the spec gives a verbalizer. A validation, test or
prediction row whose label is not one of the task's is a `DataError` naming the row; a verbalizer label that no
training row has is a `DataWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from softprompt.tasks.base import DataError, DataWarning, Example, Task
from softprompt.tasks.custom.files import Row
from softprompt.tasks.custom.spec import CustomTaskSpec


def label_order(values: set[str]) -> list[str]:
    """Numbers numerically ("2" before "10"), anything else alphabetically."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def verbalizer_for(spec: CustomTaskSpec, train: Sequence[Row], prefix: str, train_name: str) -> dict[str, str]:
    """label -> word: the spec's verbalizer, else `prefix` + label for each training label (in `label_order`)."""
    seen = {r.answer for r in train}
    if spec.verbalizer is None:
        return {label: prefix + label for label in label_order(seen)}
    missing = set(spec.verbalizer) - seen
    if missing:
        warnings.warn(f"{train_name}: no training rows with label(s) {sorted(missing)}", DataWarning, stacklevel=3)
    return dict(spec.verbalizer)


def unknown_label(spec: CustomTaskSpec, train_name: str, labels: Sequence[str]) -> str:
    """How a row with a label outside the task's is reported (the end of its error message)."""
    if spec.verbalizer is not None:
        return f"is not in the verbalizer {spec.verbalizer}"
    return f"is not in the training file {train_name}; its labels: {list(labels)}"  # only validation/test can miss


def to_examples(rows: Sequence[Row], task: Task, column: str, prefix: str, unknown: str) -> list[Example]:
    """Rows as examples: targets get `prefix`; a label outside task.labels is an error ending in `unknown`."""
    if task.kind == "generation":
        return [Example(r.text, r.text_pair, target=prefix + r.answer, source=r.loc) for r in rows]
    index = {label: i for i, label in enumerate(task.labels)}
    for r in rows:
        if r.answer not in index:
            raise DataError(f"{r.loc}, column {column!r}: label {r.answer!r} {unknown}")
    return [Example(r.text, r.text_pair, label=index[r.answer], source=r.loc) for r in rows]

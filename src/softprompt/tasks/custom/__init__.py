"""Bring your own task: classification or generation from your own CSV, TSV, JSONL or Parquet files.

    spec = CustomTaskSpec(train="reviews.csv", text_column="review", label_column="sentiment")
    task, train, validation, test = build_custom_task(spec)

One module per job: `spec` (what the user says, and its checks), `files` (reading files into rows of the named
columns), `labels` (label order, verbalizer, rows -> examples), `build` (the task, carved splits, stored tasks that
re-read their files). Every bad row is a `DataError` naming file, line/row and column; recoverable oddities (a file
that is not UTF-8) are `DataWarning`s, which the CLI prints.
"""

from softprompt.tasks.base import DataWarning
from softprompt.tasks.custom.build import build_custom_task, read_examples, spec_from_task, with_file_loaders
from softprompt.tasks.custom.files import DataFile, read_file
from softprompt.tasks.custom.spec import CustomTaskSpec, load_spec_file, parse_verbalizer

__all__ = [
    "CustomTaskSpec",
    "DataFile",
    "DataWarning",
    "build_custom_task",
    "load_spec_file",
    "parse_verbalizer",
    "read_examples",
    "read_file",
    "spec_from_task",
    "with_file_loaders",
]

"""Reading users' files: CSV, TSV, JSONL or Parquet into rows of the columns a spec names.

`read_file` decodes a file with the shared readers (tasks/readers.py; a fallback encoding is a `DataWarning`) and
keeps each record with its location ("train.csv:17 (row 16)") and the file's digest; `read_rows` takes the spec's
columns from each record, so every bad row is a `DataError` naming file, line/row and column.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.tasks.base import DataError, DataWarning
from softprompt.tasks.custom.spec import COLUMN_FLAGS, CustomTaskSpec
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
    if path.is_dir():
        raise DataError(f"{name} is a folder; give a data file (csv, tsv, jsonl or parquet)")
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


@dataclass(frozen=True)
class Row:
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


def read_rows(file: DataFile, spec: CustomTaskSpec) -> list[Row]:
    columns = spec.columns
    if file.columns is not None:  # check the header once, before any row
        for role, column in columns.items():
            if column not in file.columns:
                raise _missing_column(f"{file.name} (header)", role, column, file.columns)
    answer_role = "target" if spec.target_column else "label"
    return [
        Row(
            loc,
            _value(rec, "text", columns["text"], loc),
            _value(rec, "text_pair", columns["text_pair"], loc) if "text_pair" in columns else None,
            _value(rec, answer_role, columns[answer_role], loc),
        )
        for loc, rec in file.rows
    ]

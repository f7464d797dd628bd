"""Small readers for local data files. Every row comes with its "file:line" location, so errors can point at it."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.tasks.base import DataError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Table:
    """The rows of one file as (location, row) pairs; `encoding` is the codec that decoded it."""

    name: str
    encoding: str
    rows: list[tuple[str, Any]]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def read_text(path: PathLike, name: str | None = None) -> tuple[str, str]:
    """The file's text and its encoding: utf-8 (a BOM is dropped) when it decodes, else latin-1.

    latin-1 maps every byte to a character, so it cannot fail; the harvardnlp files (sst5/ etc.) need it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{name or path}: cannot read file: {e.strerror}") from e
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def read_lines(path: PathLike, name: str | None = None) -> Table:
    """Non-empty lines (CRLF or LF), numbered from 1 as an editor shows them. `name` is used in locations."""
    name = name or str(path)
    text, encoding = read_text(path, name)
    # split("\n"), not splitlines(): the latter also breaks on \x0b, \x1c, \u2028 ... which occur inside texts.
    rows = [(f"{name}:{i}", line.removesuffix("\r")) for i, line in enumerate(text.split("\n"), 1)]
    return Table(name, encoding, [(loc, line) for loc, line in rows if line])


def read_tsv(
    path: PathLike, header: bool = True, columns: Sequence[str] | None = None, name: str | None = None
) -> Table:
    """Tab-separated rows as dicts, GLUE style: no quoting, so a quote character is ordinary text.

    Column names are `columns` if given, else the header line. With `header=True` the first line is skipped.
    """
    if not header and not columns:
        raise ValueError("read_tsv: pass columns= for a file without a header line")
    lines = read_lines(path, name)
    rows = lines.rows
    if header:
        if not rows:
            raise DataError(f"{lines.name}: empty file, expected a header line")
        columns = columns or rows[0][1].split("\t")
        rows = rows[1:]
    out = []
    for loc, line in rows:
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{loc}: expected {len(columns)} tab-separated fields, got {len(fields)}")
        out.append((loc, dict(zip(columns, fields, strict=True))))
    return Table(lines.name, lines.encoding, out)


def read_csv(
    path: PathLike, header: bool = True, columns: Sequence[str] | None = None, name: str | None = None
) -> Table:
    """Comma-separated rows as dicts (RFC 4180 quoting; a quoted field may span lines). Columns as in `read_tsv`."""
    if not header and not columns:
        raise ValueError("read_csv: pass columns= for a file without a header line")
    name = name or str(path)
    text, encoding = read_text(path, name)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out = []
    while True:
        loc = f"{name}:{reader.line_num + 1}"  # a row's location is the line it starts on
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{loc}: malformed CSV: {e}") from None
        if not fields:
            continue  # blank line
        if header:  # the first row
            header, columns = False, columns or fields
            continue
        if len(fields) != len(columns):
            raise DataError(f"{loc}: expected {len(columns)} comma-separated fields, got {len(fields)}")
        out.append((loc, dict(zip(columns, fields, strict=True))))
    return Table(name, encoding, out)


def read_jsonl(path: PathLike, name: str | None = None) -> Table:
    """One JSON object per line."""
    lines = read_lines(path, name)
    out = []
    for loc, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{loc}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{loc}: expected a JSON object, got {type(obj).__name__}")
        out.append((loc, obj))
    return Table(lines.name, lines.encoding, out)

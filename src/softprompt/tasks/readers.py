"""Readers for local data files, shared by the built-in tasks and users' own files (`custom.py`).

Every row comes with its location, "file:line" or, with `row_numbers=True`, "file:line (row N)", so errors can
point at it. Decoding tries a chain of codecs and says which one worked, and why the first did not.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.tasks.base import DataError

PathLike = str | os.PathLike[str]

# The built-in data: GLUE & co. are UTF-8, the harvardnlp files (sst5/ etc.) latin-1.
ENCODINGS = ("utf-8", "latin-1")
# Users' files: a BOM decides first (Excel writes UTF-16 "Unicode text" and UTF-8 with a BOM), then UTF-8, then
# cp1252, which Excel on Windows writes, then latin-1 for bytes cp1252 leaves undefined.
USER_ENCODINGS = ("utf-16", "utf-8-sig", "utf-8", "cp1252", "latin-1")
_BOMS = {"utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), "utf-8-sig": (codecs.BOM_UTF8,)}
_SEPARATORS = {"tsv": "tab", "csv": "comma"}


@dataclass(frozen=True)
class Text:
    """A decoded file: its name (for locations), its text and the codec that decoded it."""

    name: str
    text: str
    encoding: str
    fallback: str | None = None  # why the first codec failed, "file:line: not valid UTF-8 (byte 0x93)"


@dataclass(frozen=True)
class Table:
    """The rows of one file as (location, row) pairs; `encoding` is the codec that decoded it."""

    name: str
    encoding: str
    rows: list[tuple[str, Any]]
    columns: list[str] | None = None  # the column names of a delimited file

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def location(name: str, line: int | None, row: int | None = None) -> str:
    """A row's location: "file:line", "file:line (row N)", or "file (row N)" in a file without lines (Parquet)."""
    where = name if line is None else f"{name}:{line}"
    return where if row is None else f"{where} (row {row})"


# ---------------------------------------------------------------- text


def decode(data: bytes, name: str, encodings: Sequence[str] = ENCODINGS) -> Text:
    """`data` decoded by the first codec in `encodings` that can.

    utf-16 and utf-8-sig are tried only on a file that starts with their BOM (unless one is the only choice), so a
    file is reported as what it is; plain utf-8 drops a BOM too. latin-1 maps every byte, so it cannot fail.
    """
    error: Exception | None = None
    for codec in encodings:
        if codec in _BOMS and len(encodings) > 1 and not data.startswith(_BOMS[codec]):
            continue
        try:
            text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
        except (UnicodeDecodeError, LookupError) as e:
            error = error or e
            continue
        return Text(name, text, codec, _why_not(data, name, error))
    raise DataError(f"{name}: cannot decode as {' or '.join(encodings)}: {error}")


def _why_not(data: bytes, name: str, error: Exception | None) -> str | None:
    """Where the first codec failed, for a warning that names the line a user can look at."""
    if not isinstance(error, UnicodeDecodeError):
        return None
    line = data.count(b"\n", 0, error.start) + 1
    return f"{name}:{line}: not valid {error.encoding.upper()} (byte 0x{data[error.start]:02x})"


def read_text(path: PathLike, name: str | None = None, encodings: Sequence[str] = ENCODINGS) -> Text:
    """The file decoded by `decode`; `name` (default: the path) is used in messages and locations."""
    name = name or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read file: {e.strerror}") from e
    return decode(data, name, encodings)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Non-empty lines (CRLF or LF), numbered from 1 as an editor shows them."""
    # split("\n"), not splitlines(): the latter also breaks on \x0b, \x1c, \u2028 ... which occur inside texts.
    for i, line in enumerate(text.split("\n"), 1):
        if line := line.removesuffix("\r"):
            yield i, line


def read_lines(path: PathLike, name: str | None = None) -> Table:
    """Non-empty lines as rows of text."""
    text = read_text(path, name)
    return Table(text.name, text.encoding, [(location(text.name, i), line) for i, line in _lines(text.text)])


# ---------------------------------------------------------------- TSV and CSV


def check_unique_columns(columns: Sequence[str], where: str) -> None:
    """Two columns with one name (after stripping spaces) would silently lose one of them: an error instead."""
    repeated = sorted(name for name, n in Counter(columns).items() if n > 1)
    if repeated:
        raise DataError(f"{where}: duplicate column name(s) {repeated}; rename them so each is unique")


def _delimited_rows(text: Text, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-blank row; a row's line is the one it starts on (a quoted field may span lines)."""
    tsv = fmt == "tsv"
    # TSV is GLUE style: no quoting, so a quote character is ordinary text. CSV has RFC 4180 quoting.
    reader = csv.reader(io.StringIO(text.text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=True)  # fmt: skip
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{text.name}:{line}: malformed {fmt.upper()}: {e}") from None
        if fields:  # else a blank line
            yield line, fields


def parse_delimited(
    text: Text, fmt: str, header: bool = True, columns: Sequence[str] | None = None, row_numbers: bool = False
) -> Table:
    """A "tsv" or "csv" file's rows as dicts.

    Column names are `columns` if given, else the header line. With `header=True` the first row is the header.
    """
    if not header and not columns:
        raise ValueError(f"{fmt}: pass columns= for a file without a header line")
    rows = _delimited_rows(text, fmt)
    if header:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{text.name}: empty file, expected a header line with the column names")
        columns = columns or [c.strip() for c in first[1]]  # stripped: "label " is meant as "label"
        check_unique_columns(columns, f"{text.name}:{first[0]} (header)")
    out = []
    for line, fields in rows:
        loc = location(text.name, line, len(out) + 1 if row_numbers else None)
        if len(fields) != len(columns):
            raise DataError(f"{loc}: expected {len(columns)} {_SEPARATORS[fmt]}-separated fields, got {len(fields)} "
                            f"(columns: {', '.join(columns)})")  # fmt: skip
        out.append((loc, dict(zip(columns, fields, strict=True))))
    return Table(text.name, text.encoding, out, list(columns))


def read_tsv(
    path: PathLike, header: bool = True, columns: Sequence[str] | None = None, name: str | None = None
) -> Table:
    """Tab-separated rows as dicts, GLUE style (unquoted). Columns as in `parse_delimited`."""
    return parse_delimited(read_text(path, name), "tsv", header, columns)


def read_csv(
    path: PathLike, header: bool = True, columns: Sequence[str] | None = None, name: str | None = None
) -> Table:
    """Comma-separated rows as dicts (RFC 4180 quoting). Columns as in `parse_delimited`."""
    return parse_delimited(read_text(path, name), "csv", header, columns)


# ---------------------------------------------------------------- JSONL


def parse_jsonl(text: Text, row_numbers: bool = False) -> Table:
    """One JSON object per line; blank lines are skipped."""
    out = []
    for i, line in _lines(text.text):
        if not line.strip():
            continue
        loc = location(text.name, i, len(out) + 1 if row_numbers else None)
        try:
            obj = json.loads(line, object_pairs_hook=functools.partial(_unique_keys, loc))
        except json.JSONDecodeError as e:
            raise DataError(f"{loc}: invalid JSON: {e.msg} (character {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{loc}: expected a JSON object, got {type(obj).__name__}")
        out.append((loc, obj))
    return Table(text.name, text.encoding, out)


def _unique_keys(loc: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique; `{"label": 1, "label": 0}` would otherwise keep only the last."""
    check_unique_columns([key for key, _ in pairs], loc)
    return dict(pairs)


def read_jsonl(path: PathLike, name: str | None = None) -> Table:
    return parse_jsonl(read_text(path, name))

"""One class per label, however a user's file spells it: `Positive`/`positive`, composed/decomposed Unicode, and the
JSON forms `1`/`1.0`/`true` are the same label.

    key(v) = casefold(NFC(strip(v)))   for text
           = the number, as an integer when it is one   for numbers ("1.0" -> "1"; true -> "1", false -> "0")

Raw values with one key are one class, named by the spelling that occurs most often in the training rows (ties:
the first in sorted order), or by the user's verbalizer label (a trained task's label) when one has that key. Every
merge is reported, so a user can see what was joined. A value that matches two verbalizer labels by key only
(`POSITIVE` with labels `Positive` and `positive`) is ambiguous and an error, as is training data with fewer than
two classes.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from softprompt.tasks.base import DataError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BOOLEANS = {"true": "1", "false": "0"}


def label_key(value: str) -> str:
    """The form two spellings of one label share (see the module docstring)."""
    text = unicodedata.normalize("NFC", value).strip()
    folded = text.casefold()
    if folded in _BOOLEANS:
        return _BOOLEANS[folded]
    if _NUMBER.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return str(int(number)) if number.is_integer() else repr(number)
    return folded


@dataclass(frozen=True)
class LabelMap:
    """raw value -> class name, and the merges (class name -> the other raw spellings joined into it)."""

    classes: dict[str, str]
    merges: dict[str, list[str]]

    def __getitem__(self, raw: str) -> str:
        return self.classes.get(raw, raw)

    def describe(self) -> str:
        return "; ".join(f"{', '.join(map(repr, others))} -> {name!r}" for name, others in self.merges.items())


def label_map(train: Sequence[str], others: Iterable[str] = (), known: Sequence[str] | None = None) -> LabelMap:
    """Classes for the raw label values of the training rows (`train`) and of the other splits (`others`).

    With `known` labels (a verbalizer's, or a trained task's) those are the class names: a raw value that is one of
    them is that class, another is the known label with its key (an error when two known labels share that key).
    Without, each key's most frequent training spelling names the class.
    """
    if known is not None:
        by_key: dict[str, list[str]] = {}
        for label in known:
            by_key.setdefault(label_key(label), []).append(label)
    else:
        counts = Counter(train)
        by_key = {}
        for raw in sorted(counts, key=lambda v: (-counts[v], v)):
            by_key.setdefault(label_key(raw), [raw])
    classes: dict[str, str] = {}
    merges: dict[str, list[str]] = {}
    for raw in sorted(set(train) | set(others)):
        candidates = by_key.get(label_key(raw), [raw])
        if raw in candidates:
            name = raw
        elif len(candidates) > 1:
            raise DataError(
                f"label {raw!r} is ambiguous: it could be any of the labels {candidates}, which differ only in case, "
                "Unicode form or number format; keep one spelling in the verbalizer or the data"
            )
        else:
            name = candidates[0]
        classes[raw] = name
        if raw != name:
            merges.setdefault(name, []).append(raw)
    return LabelMap(classes, merges)


def check_classes(labels: Iterable[str], where: str) -> None:
    """Training data with one class teaches nothing: an error that names the class."""
    present = sorted(set(labels))
    if len(present) < 2:
        found = f"only the label {present[0]!r}" if present else "no labels"
        raise DataError(f"{where}: the training rows have {found}; a classifier needs at least two classes")

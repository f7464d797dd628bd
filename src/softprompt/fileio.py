"""Crash-safe file writes, shared by artifacts, checkpoints, run results and sweep tables.

Write to a temporary file beside the target, then `os.replace` it over the target: on POSIX the rename is atomic,
so a reader (or a sweep restarted after kill -9) sees the old file or the new one, never half of one.

The temporary name is unique per call (process id + a counter), because several writers can race on one path: two
`softprompt sweep` processes started on one folder rewrite the same results table, and threads of one process (a
server saving artifacts) can write the same file. With one fixed temporary name the second writer's file would be
renamed away under it, and its own rename would fail.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

_calls = itertools.count()


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through `write(tmp_path)` beside `path`, then rename: readers see the old file or the new, never half.

    If `write` raises, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_calls)}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` for a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))

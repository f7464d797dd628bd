"""fileio.atomic_write: readers see the old file or the new one; racing writers and failing writers lose nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from softprompt.fileio import atomic_write, atomic_write_text


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half of the n")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_second_writer_in_the_middle_of_the_first_neither_fails_and_the_last_rename_wins(tmp_path: Path) -> None:
    # Two sweep workers rewriting one results table: the second starts and finishes while the first is writing.
    # With one fixed temporary name the second renamed the first's file away and the first's rename failed.
    target = tmp_path / "results.md"

    def first(tmp: str) -> None:
        Path(tmp).write_text("first")
        atomic_write_text(target, "second")
        assert target.read_text() == "second"

    atomic_write(target, first)
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


def test_racing_threads_never_show_a_reader_part_of_a_file(tmp_path: Path) -> None:
    target = tmp_path / "runs.csv"
    payloads = [f"{i}," * 20_000 for i in range(8)]  # distinct, large enough that a torn read would show
    atomic_write_text(target, payloads[0])
    seen: set[str] = set()
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(25):
                atomic_write_text(target, text)
        except BaseException as e:  # reported below
            errors.append(e)

    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in writers:
        t.start()
    while any(t.is_alive() for t in writers):
        seen.add(target.read_text())
    for t in writers:
        t.join()
    assert errors == []
    assert seen <= set(payloads)
    assert target.read_text() in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]

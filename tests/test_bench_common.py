"""bench/common.interleaved_rounds, the timing loop every side-by-side benchmark uses: each round calls every mode
exactly once, in a fresh random order, and the seconds it reports are those of the calls it made."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import interleaved_rounds  # bench/common.py


def test_every_round_calls_each_mode_once_in_a_fresh_order():
    calls: list[str] = []

    def mode(name: str, sleep: float):
        def call() -> str:
            calls.append(name)
            time.sleep(sleep)
            return f"{name}{len(calls)}"

        return call

    modes = {"a": mode("a", 0.0), "b": mode("b", 0.05), ("c", 1): mode("c", 0.0)}
    seconds, last = interleaved_rounds(modes, rounds=12, seed=3)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 12 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert {k: len(v) for k, v in seconds.items()} == {"a": 12, "b": 12, ("c", 1): 12}
    assert min(seconds["b"]) >= 0.05 > statistics.median(seconds["a"])  # each call's own time, not its round's
    assert last == {"a": f"a{max(i for i, n in enumerate(calls) if n == 'a') + 1}",
                    "b": f"b{max(i for i, n in enumerate(calls) if n == 'b') + 1}",
                    ("c", 1): f"c{max(i for i, n in enumerate(calls) if n == 'c') + 1}"}  # fmt: skip
    calls.clear()
    interleaved_rounds(modes, rounds=12, seed=3)
    assert [calls[i : i + 3] for i in range(0, len(calls), 3)] == rounds  # the seed fixes the order

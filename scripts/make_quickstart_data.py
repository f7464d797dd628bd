"""Make the repository's quick-start data: a compact slice of real GLUE SST-2 under data/glue/SST-2/.

dev.tsv is copied whole (872 rows; the built-in sst2 task uses it as the test split). train.tsv is a seeded random
sample of the full train file's rows, kept in their original order and byte for byte (header `sentence<TAB>label`),
so the built-in task reads the slice unchanged with `--data-dir data`.

    python scripts/make_quickstart_data.py --source ../shared/data      # the committed data/ (seed 0, 5,000 rows)
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

HEADER = b"sentence\tlabel\n"
REPO = Path(__file__).resolve().parent.parent


def read_rows(path: Path) -> list[bytes]:
    """The data lines of a GLUE SST-2 tsv (after its header), each with its newline."""
    lines = path.read_bytes().splitlines(keepends=True)
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{path}: expected the header {HEADER!r}, found {lines[0] if lines else b''!r}")
    return lines[1:]


def sample(rows: list[bytes], n: int, seed: int) -> list[bytes]:
    """`n` rows drawn without replacement with `random.Random(seed)`, in their original order."""
    if not 0 < n <= len(rows):
        raise ValueError(f"cannot take {n} of {len(rows)} rows")
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data", help="the full shared data dir")
    p.add_argument("--out", type=Path, default=REPO / "data")
    p.add_argument("--train-rows", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    src, dst = args.source / "glue" / "SST-2", args.out / "glue" / "SST-2"
    dst.mkdir(parents=True, exist_ok=True)
    train = sample(read_rows(src / "train.tsv"), args.train_rows, args.seed)
    dev = read_rows(src / "dev.tsv")
    (dst / "train.tsv").write_bytes(HEADER + b"".join(train))
    (dst / "dev.tsv").write_bytes(HEADER + b"".join(dev))
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        labels = [row.rstrip(b"\n").rsplit(b"\t", 1)[1] for row in rows]
        size = (dst / name).stat().st_size
        print(f"{dst / name}: {len(rows)} rows ({labels.count(b'0')} negative, {labels.count(b'1')} positive), "
              f"{size:,} bytes")  # fmt: skip


if __name__ == "__main__":
    main()

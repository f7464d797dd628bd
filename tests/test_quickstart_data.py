"""The quick-start slice in data/: the built-in sst2 task reads it unchanged, with the sizes data/README.md states,
and it is exactly what scripts/make_quickstart_data.py makes from the full shared data (when that is present)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from softprompt.tasks.builtin import get_task

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SLICE = DATA / "glue" / "SST-2"


def load_script():
    spec = importlib.util.spec_from_file_location("make_quickstart_data", REPO / "scripts" / "make_quickstart_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sst2_loads_from_the_repo_data_folder():
    task = get_task("sst2")
    splits = {split: task.load(split, DATA) for split in ("train", "validation", "test")}
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 4128, "validation": 872, "test": 872}
    assert task.split_info["local"]["sizes"] == {"train": 4128, "validation": 872, "test": 872}
    # label counts as data/README.md states them: dev 428/444; train file 2,209/2,791 (train + validation)
    assert sum(ex.label for ex in splits["test"]) == 444
    assert sum(ex.label for split in ("train", "validation") for ex in splits[split]) == 2791
    # the carve holds out validation from train: no row in both, and together they are the whole file
    sources = [{ex.source for ex in splits[split]} for split in ("train", "validation")]
    assert not sources[0] & sources[1] and len(sources[0] | sources[1]) == 5000


def test_the_folder_stays_compact():
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 400_000


def test_the_slice_is_what_the_script_makes(data_dir):
    script = load_script()
    full = data_dir / "glue" / "SST-2"
    assert (SLICE / "dev.tsv").read_bytes() == (full / "dev.tsv").read_bytes()
    rows = script.sample(script.read_rows(full / "train.tsv"), 5000, seed=0)
    assert (SLICE / "train.tsv").read_bytes() == script.HEADER + b"".join(rows)

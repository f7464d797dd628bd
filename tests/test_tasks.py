from __future__ import annotations

import csv
import json
import sys
from collections import Counter

import pytest

from softprompt.tasks.base import DataError
from softprompt.tasks.builtin import carve, get_task, list_tasks
from softprompt.tasks.readers import read_csv, read_jsonl, read_tsv

# (train, validation, test) rows from shared/data with the default seed
SIZES = {
    "sst2": (67349 - 872, 872, 872),
    "rte": (2490 - 277, 277, 277),
    "mrpc": (4076 - 408, 408, 1725),
    "cola": (8551 - 1043, 1043, 1043),
    "qnli": (5463 - 2500, 500, 2000),
    "boolq": (3270 - 1500, 500, 1000),
    "cb": (250 - 56, 56, 56),
    "agnews": (5984 - 1000, 1000, 7600),
    "dbpedia": (5000 - 1000, 1000, 5000),
    "snli": (400, 100, 500),
    "mnli": (400, 100, 500),
    "yelp": (400, 100, 500),
}
PAIR_TASKS = {"rte", "mrpc", "qnli", "boolq", "cb", "snli", "mnli"}


def load_all(name, data_dir, seed=0):
    task = get_task(name, seed=seed)
    return task, {split: task.load(split, data_dir) for split in ("train", "validation", "test")}


def test_registry():
    assert list_tasks() == sorted(SIZES)
    assert get_task("SST-2").name == "sst2"
    assert get_task(" ag_news ").name == "agnews"
    assert get_task("Yelp-Polarity").name == "yelp"
    assert get_task("dbpedia_14").name == "dbpedia"
    with pytest.raises(ValueError, match="unknown task 'stsb'.*agnews.*sst2"):
        get_task("stsb")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_task_loads_real_data(name, data_dir):
    task, splits = load_all(name, data_dir)
    assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == SIZES[name]
    assert len(set(task.verbalizer)) == len(task.verbalizer) == len(task.labels)
    assert all(w.startswith(" ") and len(w.split()) == 1 for w in task.verbalizer)
    for split, examples in splits.items():
        assert all(ex.label is not None and 0 <= ex.label < len(task.labels) for ex in examples), split
        assert set(Counter(ex.label for ex in examples)) == set(range(len(task.labels))), split  # every class seen
        assert all(ex.text.strip() and ex.source for ex in examples)
        assert all((ex.text_pair is not None) == (name in PAIR_TASKS) for ex in examples)
    # carved splits are disjoint (a row's source is its file and line)
    sources = [{ex.source for ex in examples} for examples in splits.values()]
    assert sum(map(len, sources)) == len(set().union(*sources))
    rendered = task.render(splits["test"][0])
    assert splits["test"][0].text in rendered and not rendered.endswith(" ")
    info = task.split_info
    train, validation, test = SIZES[name]
    assert info["seed"] == 0 and info["local"]["sizes"] == {"train": train, "validation": validation, "test": test}
    json.dumps(task.to_dict())  # split_info must be storable in an artifact


def test_local_files_are_the_files_each_split_opens(monkeypatch, tmp_path):
    """What a sweep fingerprints for a built-in task (`local_files`) against what its loaders open, every task and
    split: the file a split is carved from counts as that split's."""
    from softprompt.tasks import builtin
    from softprompt.tasks.base import Example

    opened: list[str] = []

    def record(file: builtin.LocalFile, root):
        opened.append(file.path)
        return [Example(text=f"row {i}", text_pair="b", label=i % len(file.label_values)) for i in range(20_000)]

    monkeypatch.setattr(builtin.LocalFile, "__call__", record)
    for name in list_tasks():
        task = get_task(name)
        for split in ("train", "validation", "test"):
            opened.clear()
            task.load(split, tmp_path)
            assert opened == builtin.local_files(task, [split]), (name, split)
        assert builtin.local_files(task, ["test", "test"]) == builtin.local_files(task, ["test"])


def test_split_info_records_the_carve(data_dir):
    task = get_task("sst2")
    local = task.split_info["local"]
    assert local["carve"] == {"from": "glue/SST-2/train.tsv", "held_out": {"validation": 872}, "seed": 0}
    assert local["splits"] == {"train": "glue/SST-2/train.tsv", "validation": "glue/SST-2/train.tsv",
                               "test": "glue/SST-2/dev.tsv"}  # fmt: skip
    assert task.split_info["hub"]["splits"]["test"] == "hf:nyu-mll/glue/sst2:validation"
    assert get_task("qnli").split_info["local"]["carve"]["held_out"] == {"test": 2000, "validation": 500}


def test_carves_are_seeded(data_dir):
    _, a = load_all("qnli", data_dir, seed=0)
    _, b = load_all("qnli", data_dir, seed=0)
    _, c = load_all("qnli", data_dir, seed=1)
    assert a == b
    assert a["test"] != c["test"]
    assert {ex.source for ex in a["train"] + a["validation"] + a["test"]} == {
        ex.source for ex in c["train"] + c["validation"] + c["test"]
    }
    parts = carve(a["test"], {"validation": 10}, seed=5)
    assert len(parts["validation"]) == 10 and len(parts["train"]) == len(a["test"]) - 10


def test_label_mapping_against_the_files(data_dir):
    # SST-2: "0" is negative
    sst2 = get_task("sst2")
    first = next(ex for ex in sst2.load("test", data_dir) if ex.source == "glue/SST-2/dev.tsv:2")
    assert first.text == "one long string of cliches ." and sst2.labels[first.label] == "negative"
    # DBpedia: the DHIM subset ids follow dhim_meta.txt, the task's labels follow classes.txt
    meta = dict(line.split(": ") for line in (data_dir / "dbpedia/dhim_meta.txt").read_text().splitlines()[:14])
    dbpedia = get_task("dbpedia")
    assert list(dbpedia.labels) == (data_dir / "dbpedia/classes.txt").read_text().split()
    with open(data_dir / "dbpedia/dhim_test_subset5000.csv", newline="") as f:
        expected = [meta[row[0]] for row in csv.reader(f)]
    assert [dbpedia.labels[ex.label] for ex in dbpedia.load("test", data_dir)] == expected
    # AG News: official ids 1-4 = World, Sports, Business, Sci/Tech
    agnews = get_task("agnews")
    row = next(ex for ex in agnews.load("test", data_dir) if ex.source == "agnews/test.csv:2")
    assert "Turner" in row.text and agnews.labels[row.label] == "Business"


def make_sst2(tmp_path, train_text: str):
    (tmp_path / "glue/SST-2").mkdir(parents=True)
    (tmp_path / "glue/SST-2/train.tsv").write_text(train_text)
    (tmp_path / "glue/SST-2/dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    return tmp_path


@pytest.mark.parametrize(
    "body, message",
    [
        ("sentence\tlabel\nfine\t0\nno label here\n", "glue/SST-2/train.tsv:3: expected 2 tab-separated fields, got 1"),
        ("sentence\tlabel\nfine\t0\nneutral\t2\n", "glue/SST-2/train.tsv:3: unknown label '2'"),
        ("sentence\tlabel\nfine\t0\n  \t1\n", "glue/SST-2/train.tsv:3: empty 'sentence'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, body, message):
    task = get_task("sst2")
    with pytest.raises(DataError, match=message):
        task.load("train", make_sst2(tmp_path, body))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="RTE/train.tsv: file not found"):
        get_task("rte").load("train", tmp_path)


def test_readers_report_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2\n')
    with pytest.raises(DataError, match=r"a\.jsonl:3: invalid JSON"):
        read_jsonl(tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: expected a JSON object"):
        read_jsonl(tmp_path / "b.jsonl")
    # a quoted field may span lines; a row's location is the line it starts on
    (tmp_path / "c.csv").write_text('label,text\n1,"two\nlines"\n2\n')
    with pytest.raises(DataError, match=r"c\.csv:4: expected 2 comma-separated fields, got 1"):
        read_csv(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text('label,text\n1,"two\nlines"\n')
    table = read_csv(tmp_path / "d.csv", name="d.csv")
    assert table.rows == [("d.csv:2", {"label": "1", "text": "two\nlines"})]
    (tmp_path / "e.tsv").write_text("a\tb\r\n1\t2\r\n")  # CRLF
    assert read_tsv(tmp_path / "e.tsv", header=False, columns=("x", "y"), name="e").rows == [
        ("e:1", {"x": "a", "y": "b"}),
        ("e:2", {"x": "1", "y": "2"}),
    ]


def test_encoding_fallback(tmp_path):
    (tmp_path / "latin.tsv").write_bytes("text\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    table = read_tsv(tmp_path / "latin.tsv")
    assert table.encoding == "latin-1" and table.rows[0][1]["text"] == "café crème"
    (tmp_path / "utf8.tsv").write_text("text\tlabel\ncafé\t1\n", encoding="utf-8-sig")  # with a BOM
    table = read_tsv(tmp_path / "utf8.tsv")
    assert table.encoding == "utf-8" and table.rows == [(f"{tmp_path / 'utf8.tsv'}:2", {"text": "café", "label": "1"})]


def test_hub_without_datasets_says_what_to_do(monkeypatch):
    monkeypatch.delenv("SOFTPROMPT_DATA_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="pip install datasets"):
        get_task("sst2").load("test")

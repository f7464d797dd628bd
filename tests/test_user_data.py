"""Users' data without silent wrong answers: duplicate columns, spellings of one label, one-class training data, the
label read as text, the training file scored as test, and only the named columns reaching the model."""

from __future__ import annotations

import json
import unicodedata
import warnings
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.tasks.base import DataError, Task
from softprompt.tasks.custom import CustomTaskSpec, DataWarning, build_custom_task, read_examples
from softprompt.tasks.labels import label_key, label_map
from softprompt.tasks.readers import parse_jsonl, read_csv, read_text, read_tsv

WORDS = ["good", "great", "fine", "fun", "bad", "awful", "boring", "dull"]


def csv_file(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def jsonl_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def labelled(labels: list[str]) -> list[str]:
    """CSV rows `text,label` with a distinct text per row."""
    return [f"the film was {WORDS[i % 8]} {i},{label}" for i, label in enumerate(labels)]


def build(spec: CustomTaskSpec) -> tuple[tuple, list[str]]:
    """build_custom_task's result and the DataWarning messages it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_custom_task(spec)
    return result, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


# ---------------------------------------------------------------- duplicate column names


@pytest.mark.parametrize("header", ["text,label,label", "text,label,label "])  # stripped names count too
def test_duplicate_csv_columns_are_an_error(tmp_path, header):
    path = csv_file(tmp_path / "d.csv", header, ["a,0,1", "b,1,0"])
    with pytest.raises(DataError, match=r"d.csv:1 \(header\): duplicate column name\(s\) \['label'\]"):
        read_csv(path)
    with pytest.raises(DataError, match="duplicate column"):
        build_custom_task(CustomTaskSpec(train=str(path), label_column="label"))


def test_duplicate_tsv_columns_are_an_error(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\ttext\tlabel\na\tb\t0\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['text'\]"):
        read_tsv(path)


def test_duplicate_jsonl_keys_are_an_error_naming_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1, "label": 0}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2 \(row 2\): duplicate column name\(s\) \['label'\]"):
        parse_jsonl(read_text(path), row_numbers=True)
    # Nested objects are values, not columns, but a repeated key there is as silently lost: also an error.
    path.write_text('{"text": "a", "label": 0, "meta": {"k": 1, "k": 2}}\n')
    with pytest.raises(DataError, match="duplicate column"):
        parse_jsonl(read_text(path))


def test_unique_columns_still_read(tmp_path):
    table = read_csv(csv_file(tmp_path / "d.csv", "text,label,Label", ["a,0,x"]))  # case differs: two columns
    assert table.columns == ["text", "label", "Label"] and table.rows[0][1] == {"text": "a", "label": "0", "Label": "x"}


# ---------------------------------------------------------------- label spellings


def test_label_key_joins_spellings_and_keeps_distinct_labels_apart():
    decomposed = unicodedata.normalize("NFD", "café")
    assert decomposed != "café" and label_key(decomposed) == label_key("café")
    assert label_key("Positive") == label_key(" positive ") == label_key("POSITIVE")
    assert label_key("1") == label_key("1.0") == label_key("true") == label_key("1e0") == "1"
    assert label_key("0") == label_key("0.00") == label_key("False") == "0"
    assert len({label_key(v) for v in ("1", "2", "10", "1.5", "positive", "negative", "nan", "inf")}) == 8


def test_case_variants_become_one_class_with_a_warning(tmp_path):
    labels = ["positive", "negative"] * 6 + ["Positive", "POSITIVE", "Negative", "negative"]
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(labels))
    (task, train, validation, test), messages = build(CustomTaskSpec(train=str(path), label_column="label"))
    assert task.labels == ("negative", "positive")  # the most frequent spelling names each class
    assert any("'POSITIVE', 'Positive' -> 'positive'" in m and "'Negative' -> 'negative'" in m for m in messages)
    raw = {f"the film was {WORDS[i % 8]} {i}": label for i, label in enumerate(labels)}
    for ex in train + validation + test:  # ground truth: every row's own label, folded
        assert task.labels[ex.label] == raw[ex.text].lower()


def test_unicode_forms_become_one_class(tmp_path):
    composed, decomposed = "café", unicodedata.normalize("NFD", "café")
    labels = [composed, "tea"] * 5 + [decomposed] * 3
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(labels))
    (task, *splits), messages = build(CustomTaskSpec(train=str(path), label_column="label"))
    assert task.labels == (composed, "tea")
    assert sum(ex.label == 0 for split in splits for ex in split) == 8
    assert any(repr(decomposed) in m and "merged" in m for m in messages)


def test_jsonl_numbers_and_booleans_become_one_class(tmp_path):
    values = [1, 0, 1.0, 0.0, True, False, "1", "0"] * 2
    rows = [{"text": f"row {i} {WORDS[i % 8]}", "label": v} for i, v in enumerate(values)]
    path = jsonl_file(tmp_path / "d.jsonl", rows)
    (task, *splits), messages = build(CustomTaskSpec(train=str(path), label_column="label"))
    assert task.labels == ("0", "1") and task.verbalizer == (" 0", " 1")
    truth = {r["text"]: int(float(r["label"])) for r in rows}
    assert all(ex.label == truth[ex.text] for split in splits for ex in split)
    assert any("'1.0', 'true' -> '1'" in m for m in messages)


def test_validation_spelling_maps_to_the_training_class(tmp_path):
    train = csv_file(tmp_path / "train.csv", "text,label", labelled(["yes", "no"] * 5))
    dev = csv_file(tmp_path / "dev.csv", "text,label", ["a,Yes", "b,NO"])
    (task, _, validation, _), messages = build(CustomTaskSpec(train=str(train), validation=str(dev),
                                                              label_column="label"))  # fmt: skip
    assert [task.labels[ex.label] for ex in validation] == ["yes", "no"]
    assert any("'Yes' -> 'yes'" in m for m in messages)


def test_verbalizer_labels_name_the_classes(tmp_path):
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(["pos", "neg"] * 4 + ["POS", "Neg"]))
    spec = CustomTaskSpec(train=str(path), label_column="label", verbalizer={"Neg": " bad", "Pos": " good"})
    (task, *splits), messages = build(spec)
    assert task.labels == ("Neg", "Pos") and sum(len(s) for s in splits) == 10
    assert any("'POS', 'pos' -> 'Pos'" in m for m in messages)


def test_ambiguous_spelling_is_an_error(tmp_path):
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(["Positive", "positive", "negative", "POSITIVE"] * 3))
    spec = CustomTaskSpec(train=str(path), label_column="label",
                          verbalizer={"Positive": " good", "positive": " great", "negative": " bad"})  # fmt: skip
    with pytest.raises(DataError, match=r"label 'POSITIVE' is ambiguous.*\['Positive', 'positive'\]"):
        build_custom_task(spec)
    with pytest.raises(DataError, match="ambiguous"):
        label_map(["1.0"], known=["1", "01"])


def test_exact_labels_of_a_trained_task_are_kept(tmp_path):
    """An artifact trained before merging may have two labels that differ in case: exact values still match."""
    task = Task("t", "{text}\nLabel:", labels=("A", "a"), verbalizer=(" x", " y"))
    path = csv_file(tmp_path / "d.csv", "text,label", ["one,A", "two,a"])
    spec = CustomTaskSpec(label_column="label")
    assert [ex.label for ex in read_examples(task, path, spec)] == [0, 1]


def test_eval_file_spellings_map_to_the_tasks_labels(tmp_path):
    train = csv_file(tmp_path / "train.csv", "text,label", labelled(["positive", "negative"] * 5))
    task, *_ = build_custom_task(CustomTaskSpec(train=str(train), label_column="label"))
    other = csv_file(tmp_path / "new.csv", "text,label", ["a,POSITIVE", "b,Negative", "c,negative"])
    with pytest.warns(DataWarning, match="'POSITIVE' -> 'positive'"):
        examples = read_examples(task, other)
    assert [task.labels[ex.label] for ex in examples] == ["positive", "negative", "negative"]


# ---------------------------------------------------------------- one class, label as text, columns


@pytest.mark.parametrize("labels", [["positive"] * 12, ["positive"] * 6 + ["Positive", "POSITIVE"] * 3])
def test_one_class_training_data_is_an_error(tmp_path, labels):
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(labels))
    with pytest.raises(DataError, match=r"d.csv: the training rows have only the label 'positive'; .* two classes"):
        build(CustomTaskSpec(train=str(path), label_column="label"))


def test_label_column_as_text_is_an_error(tmp_path):
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(["a", "b"] * 5))
    with pytest.raises(DataError, match=r"column 'label' is both the text \(--text-column\) and the label"):
        build_custom_task(CustomTaskSpec(train=str(path), text_column="label", label_column="label"))
    path2 = csv_file(tmp_path / "p.csv", "s1,s2,label", [f"x{i},y{i},{i % 2}" for i in range(10)])
    with pytest.raises(DataError, match=r"column 'label' is both the text pair"):
        build_custom_task(CustomTaskSpec(train=str(path2), text_column="s1", text_pair_column="label",
                                         label_column="label", template="{text} {text_pair}"))  # fmt: skip
    with pytest.raises(DataError, match="both the text and the text pair"):
        build_custom_task(CustomTaskSpec(train=str(path2), text_column="s1", text_pair_column="s1",
                                         label_column="label", template="{text} {text_pair}"))  # fmt: skip
    gen = csv_file(tmp_path / "g.csv", "q,a", [f"q{i},a{i}" for i in range(10)])
    with pytest.raises(DataError, match=r"column 'a' is both the text .* and the target"):
        build_custom_task(CustomTaskSpec(train=str(gen), text_column="a", target_column="a"))


def test_only_named_columns_reach_the_model(tmp_path):
    """Another column changing changes nothing; a named column that is missing is an error, not a look-alike."""
    rows = labelled(["a", "b"] * 5)
    one = csv_file(tmp_path / "one.csv", "review,label,notes", [f"{r},note {i}" for i, r in enumerate(rows)])
    two = csv_file(tmp_path / "two.csv", "review,label,notes", [f"{r},other {i}" for i, r in enumerate(rows)])
    spec = CustomTaskSpec(text_column="review", label_column="label")
    first = [[(ex.text, ex.label) for ex in split] for split in build_custom_task(spec.merged(train=str(one)))[1:]]
    second = [[(ex.text, ex.label) for ex in split] for split in build_custom_task(spec.merged(train=str(two)))[1:]]
    assert first == second
    assert all(text.startswith("the film was") for split in first for text, _ in split)
    # No 'text' column: the default text column is not replaced by some other column.
    with pytest.raises(DataError, match=r"no column 'text' \(set by --text-column\)"):
        build_custom_task(CustomTaskSpec(train=str(one), label_column="label"))
    upper = csv_file(tmp_path / "upper.csv", "Text,label", rows)
    with pytest.raises(DataError, match="no column 'text'"):
        build_custom_task(CustomTaskSpec(train=str(upper), label_column="label"))


# ---------------------------------------------------------------- train file scored as test


def test_training_file_as_test_is_an_error_unless_allowed(tmp_path):
    path = csv_file(tmp_path / "d.csv", "text,label", labelled(["a", "b"] * 10))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())
    for split, other, same in (("test", path, "is"), ("validation", copy, "has the same content as")):
        spec = CustomTaskSpec(train=str(path), label_column="label", **{split: str(other)})
        with pytest.raises(DataError, match=f"the {split} file .* {same} the training file .*--allow-overlap"):
            build_custom_task(spec)
        (task, train, validation, test), messages = build(spec.merged(allow_overlap=True))
        assert any("(allowed)" in m for m in messages)
        scored = test if split == "test" else validation
        assert len(scored) == 20 and {ex.text for ex in train} <= {ex.text for ex in scored}  # as asked
    different = csv_file(tmp_path / "dev.csv", "text,label", ["x,a", "y,b"])
    (_, _, validation, _), messages = build(CustomTaskSpec(train=str(path), validation=str(different),
                                                           label_column="label"))  # fmt: skip
    assert len(validation) == 2 and not messages


def test_cli_refuses_the_training_file_as_test_and_allows_it_when_asked(tmp_path, capsys, tiny_model_dir):
    path = str(csv_file(tmp_path / "d.csv", "text,label", labelled(["a", "b"] * 10)))
    argv = ["train", "--data", path, "--test", path, "--label-column", "label", "--model", tiny_model_dir, "--method",
            "ulpt", "--prompt-len", "2", "--rank", "2", "--steps", "1", "--batch-size", "2", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "is the training file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--out", str(tmp_path / "run"), "--allow-overlap"]) == 0
    assert "warning: the test file" in capsys.readouterr().err

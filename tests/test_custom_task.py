"""Bring your own task: files in every format, defaults, errors that point at the row, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from softprompt.cli import main
from softprompt.cli.common import count_truncated
from softprompt.evaluation import evaluate
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.base import DataError, Example, Task
from softprompt.tasks.custom import (
    CustomTaskSpec,
    DataWarning,
    build_custom_task,
    load_spec_file,
    parse_verbalizer,
    read_examples,
)

GOOD, BAD = ["good", "great", "fine", "fun"], ["bad", "awful", "boring", "not"]
ROWS = [
    {"review": f"the movie was {(GOOD if i % 2 else BAD)[i % 4]}", "sentiment": "positive" if i % 2 else "negative"}
    for i in range(20)
]


def write(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def spec(path: Path, **kw) -> CustomTaskSpec:
    return CustomTaskSpec(train=str(path), **{"text_column": "review", "label_column": "sentiment", **kw})


# ---------------------------------------------------------------- formats and defaults


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_each_format_gives_the_same_task(tmp_path, fmt):
    task, train, validation, test = build_custom_task(spec(write(tmp_path / f"reviews.{fmt}", ROWS)))
    assert task.kind == "classification"
    assert task.labels == ("negative", "positive")  # sorted distinct train labels, names kept
    assert task.verbalizer == (" negative", " positive")
    assert task.template == "{text}\nLabel:"
    assert (len(train), len(validation), len(test)) == (16, 2, 2)  # 10% + 10% carved from train
    assert sorted(ex.text for ex in train + validation + test) == sorted(r["review"] for r in ROWS)
    ex = next(ex for ex in train if ex.text == ROWS[1]["review"])
    assert ex.label == 1 and ex.source.startswith(f"{tmp_path / f'reviews.{fmt}'}:")
    info = task.split_info
    assert info["files"]["train"]["format"] == fmt and info["files"]["train"]["encoding"] == "utf-8"
    assert info["custom"]["text_column"] == "review" and info["custom"]["label_column"] == "sentiment"
    assert info["carve"]["held_out"] == {"test": 2, "validation": 2} and info["sizes"]["train"] == 16
    assert task.load("validation") == validation  # the CLI's load_splits goes through Task.load
    # The carve is a pure function of file and seed; another seed carves differently.
    assert build_custom_task(spec(tmp_path / f"reviews.{fmt}"))[3] == test
    assert build_custom_task(spec(tmp_path / f"reviews.{fmt}", seed=1))[3] != test


def test_numeric_labels_sort_numerically_and_json_values_become_text(tmp_path):
    rows = [{"text": "good", "label": n} for n in (10, 2, 2, 10, 1, 1, 2, 10, 1, 2)]
    task, *_ = build_custom_task(CustomTaskSpec(train=str(write(tmp_path / "d.jsonl", rows)), label_column="label"))
    assert task.labels == ("1", "2", "10") and task.verbalizer == (" 1", " 2", " 10")


def test_parquet_when_pyarrow_is_installed(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    task, train, validation, test = build_custom_task(spec(path))
    assert task.labels == ("negative", "positive") and len(train + validation + test) == 20


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    for module in ("pyarrow", "pyarrow.parquet", "pandas"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    path = tmp_path / "reviews.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"reviews\.parquet: reading Parquet needs pyarrow: pip install pyarrow"):
        build_custom_task(spec(path))


def test_pair_columns_and_given_splits(tmp_path):
    rows = [{"a": f"the film was {w}", "b": f"it is {w}", "y": "yes"} for w in GOOD + BAD]
    rows += [{"a": "a movie", "b": "a review", "y": "no"}]
    train, dev = write(tmp_path / "train.csv", rows), write(tmp_path / "dev.csv", rows[:3] + rows[-1:])
    s = CustomTaskSpec(train=str(train), validation=str(dev), text_column="a", text_pair_column="b", label_column="y")
    task, tr, va, te = build_custom_task(s)
    assert task.template == "{text}\n{text_pair}\nLabel:"
    assert task.render(va[0]) == "the film was good\nit is good\nLabel:"
    assert (len(tr), len(va), len(te)) == (8, 4, 1)  # only test is carved
    assert task.split_info["carve"]["held_out"] == {"test": 1}


def test_a_train_file_too_small_to_carve_says_so(tmp_path):
    train = write(tmp_path / "train.csv", ROWS[:2])  # 1 test + 1 validation row would leave no train row
    spec = CustomTaskSpec(train=str(train), text_column="review", label_column="sentiment")
    with pytest.raises(DataError, match=r"train\.csv: 2 rows are too few to carve a validation split.*as files"):
        build_custom_task(spec)


def test_task_file_with_flags_overriding_it(tmp_path):
    write(tmp_path / "reviews.csv", ROWS)
    (tmp_path / "task.yaml").write_text(
        'train: reviews.csv\ntext_column: review\nlabel_column: sentiment\ntemplate: "Review: {text}\\nIt was"\n'
        "verbalizer:\n  negative: ' bad'\n  positive: ' good'\nvalidation_fraction: 0.25\n"
    )
    s = load_spec_file(tmp_path / "task.yaml")
    assert s.train == str(tmp_path / "reviews.csv")  # relative to the task file, not the working dir
    task, train, validation, _ = build_custom_task(s.merged(template="{text} ! it was", seed=None))
    assert task.template == "{text} ! it was" and task.verbalizer == (" bad", " good") and len(validation) == 5
    (tmp_path / "ag.yaml").write_text("train: reviews.csv\nlabel_column: sentiment\nverbalizer: {1: ' a', 2: ' b'}\n")
    assert load_spec_file(tmp_path / "ag.yaml").verbalizer == {"1": " a", "2": " b"}
    (tmp_path / "bad.json").write_text('{"train": "reviews.csv", "label_colum": "sentiment"}')
    with pytest.raises(DataError, match=r"bad\.json: unknown key\(s\) \['label_colum'\]"):
        load_spec_file(tmp_path / "bad.json")


def test_no_double_space_when_the_template_ends_in_one(tmp_path):
    path = write(tmp_path / "reviews.csv", ROWS)
    task, *_ = build_custom_task(spec(path, template="Review: {text}\nSentiment: "))
    assert task.verbalizer == ("negative", "positive")
    qa = write(tmp_path / "qa.csv", [{"q": "is it good ?", "a": "yes"}] * 5)
    _, train, *_ = build_custom_task(CustomTaskSpec(train=str(qa), text_column="q", target_column="a"))
    assert train[0].target == " yes"


def test_verbalizer_pairs_keep_the_leading_space():
    assert parse_verbalizer(["positive= good", "negative=' bad'", 'neutral=" so so"']) == {
        "positive": " good", "negative": " bad", "neutral": " so so"}  # fmt: skip
    with pytest.raises(ValueError, match="LABEL=WORD"):
        parse_verbalizer(["positive"])


# ---------------------------------------------------------------- scoring


def test_multi_token_verbalizer_is_the_sum_of_token_log_probs():
    backbone = tiny_backbone("llama")
    task = Task("t", "review : {text} . sentiment :", labels=("neg", "pos"), verbalizer=(" very bad", " very good"))
    scorer = Scorer(backbone, task)
    assert not scorer.single_token
    examples = [Example("the movie was fun"), Example("it was awful and boring , not good")]
    with torch.no_grad():
        scores = scorer.label_scores(scorer.encode(examples), None)
        for i, ex in enumerate(examples):
            for j, word in enumerate(task.verbalizer):
                text_ids, word_ids = backbone.tokenizer(task.render(ex))["input_ids"], backbone.tokenize(word)
                logp = torch.log_softmax(backbone.model(torch.tensor([text_ids + word_ids])).logits[0], -1)
                expected = sum(logp[len(text_ids) - 1 + k, t] for k, t in enumerate(word_ids))
                torch.testing.assert_close(scores[i, j], expected, atol=1e-4, rtol=1e-4)
    # Both words start with "very": scoring only the first token would tie them.
    assert (scores[:, 0] - scores[:, 1]).abs().min() > 1e-4


def test_generation_target_trains_on_target_tokens_and_reports_metrics(tmp_path):
    rows = [{"q": f"is the movie {w} ?", "a": "yes" if w in GOOD else "no"} for w in GOOD + BAD]
    task, train, validation, _ = build_custom_task(
        CustomTaskSpec(train=str(write(tmp_path / "qa.csv", rows)), text_column="q", target_column="a")
    )
    assert task.kind == "generation" and task.metrics == ("exact_match", "token_f1")
    assert task.template == "{text}\nAnswer:" and train[0].target in (" yes", " no")
    backbone = tiny_backbone("llama")
    scorer = Scorer(backbone, task)
    batch = scorer.encode(train[:2])
    assert (batch.targets >= 0).sum(-1).tolist() == [2, 2]  # the answer word + end of sequence, not the input
    prompt = torch.zeros(1, 3, backbone.hidden_size, requires_grad=True)
    loss = scorer.loss(batch, PromptInputs(embeds=prompt))
    loss.backward()
    assert torch.isfinite(loss) and prompt.grad.abs().sum() > 0
    metrics = evaluate(scorer, validation, None)
    assert {"exact_match", "token_f1", "num_examples"} <= set(metrics)


# ---------------------------------------------------------------- errors point at file, row and column


def error_cases(tmp_path: Path) -> dict[str, tuple[CustomTaskSpec, str]]:
    good = write(tmp_path / "good.csv", ROWS)
    empty = write(tmp_path / "empty.csv", ROWS[:3] + [{"review": "  ", "sentiment": "positive"}] + ROWS[4:])
    odd_label = write(tmp_path / "odd.tsv", ROWS[:5] + [{"review": "fine", "sentiment": "meh"}])
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    return {
        "missing file": (spec(tmp_path / "nope.csv"), r"nope\.csv: file not found"),
        "unknown format": (spec(tmp_path / "data.xlsx"), r"data\.xlsx: unknown format '\.xlsx'; expected one of"),
        "missing column": (
            spec(good, text_column="text"),
            r"good\.csv \(header\): no column 'text' \(set by --text-column\); "
            r"available columns: 'review', 'sentiment'",
        ),
        "empty text": (spec(empty), r"empty\.csv:5 \(row 4\), column 'review': empty text"),
        "label not in verbalizer": (
            spec(odd_label, verbalizer={"negative": " bad", "positive": " good"}),
            r"odd\.tsv:7 \(row 6\), column 'sentiment': label 'meh' is not in the verbalizer",
        ),
        "label not in train": (
            spec(good, test=str(odd_label)),
            r"odd\.tsv:7 \(row 6\), column 'sentiment': label 'meh' is not in the training file .*good\.csv",
        ),
        "bad template": (spec(good, template="{review}: {text}"), r"only \{text\} and \{text_pair\}.*'review'"),
        "both answers": (spec(good, target_column="sentiment"), "not both"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing file", "unknown format", "missing column", "empty text", "label not in verbalizer",
     "label not in train", "bad template", "both answers"],
)  # fmt: skip
def test_errors_name_file_row_and_column(tmp_path, case):
    s, message = error_cases(tmp_path)[case]
    with pytest.raises(DataError, match=message):
        build_custom_task(s)


def test_jsonl_row_without_the_column_lists_what_it_has(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS[:2] + [{"review": "fun", "stars": 5}])
    with pytest.raises(DataError, match=r"d\.jsonl:3 \(row 3\): no column 'sentiment' .* 'review', 'stars'"):
        build_custom_task(spec(path))


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("café,positive\n".encode("cp1252") + b"na\xefve \x93quote\x94,negative\n", "cp1252"),
        (b"caf\xe9,positive\nbad \x81byte,negative\n", "latin-1"),  # 0x81 is undefined in cp1252
    ],
)
def test_non_utf8_file_is_decoded_with_a_fallback_and_reported(tmp_path, data, encoding):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"review,sentiment\n" + data * 5)
    with pytest.warns(DataWarning, match=rf"reviews\.csv:2: not valid UTF-8 \(byte 0x.*decoded the file as {encoding}"):
        task, train, validation, test = build_custom_task(spec(path))
    assert task.split_info["files"]["train"]["encoding"] == encoding
    assert "café" in {ex.text for ex in train + validation + test}
    if encoding == "cp1252":
        assert "naïve “quote”" in {ex.text for ex in train + validation + test}


def test_utf8_with_bom(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"\xef\xbb\xbf" + write(tmp_path / "plain.csv", ROWS).read_bytes())
    task, *_ = build_custom_task(spec(path))  # the BOM is not part of the first column's name
    assert task.split_info["files"]["train"]["encoding"] == "utf-8-sig"


def test_over_long_rows_are_truncated_and_counted():
    backbone = tiny_backbone("llama", max_length=16)
    task = Task("t", "{text}\nLabel:", labels=("a", "b"), verbalizer=(" good", " bad"))
    examples = [Example("the movie " * 20), Example("fun"), Example("bad " * 30)]
    assert count_truncated(Scorer(backbone, task), examples) == 2
    multi = Task("t", "{text}\nLabel:", labels=("a", "b"), verbalizer=(" very good", " very bad"))
    assert count_truncated(Scorer(backbone, multi), examples) == 2  # per example, not per (example, label) row


# ---------------------------------------------------------------- CLI end to end (conftest's tiny_model_dir)


TRAIN = ["--method", "ulpt", "--prompt-len", "4", "--rank", "2", "--steps", "2", "--batch-size", "4", "--quiet"]


def run_cli(capsys, *argv: str) -> tuple[list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_cli_train_predict_eval_on_own_csv(tmp_path, capsys, tiny_model_dir):
    rows = ROWS + [{"review": "the film was " + "very " * 40 + "good", "sentiment": "positive"}]
    data = write(tmp_path / "reviews.csv", rows)
    out = tmp_path / "run"
    [summary], err = run_cli(
        capsys, "train", "--data", str(data), "--text-column", "review", "--label-column", "sentiment",
        "--template", r"review : {text}\nsentiment :", "--verbalizer", "negative= bad", "positive= good",
        "--model", tiny_model_dir, "--max-length", "24", "--out", str(out), *TRAIN,
    )  # fmt: skip
    assert "test" in summary and "accuracy" in summary["test"]
    assert "examples are longer than 24 tokens (--max-length) and were truncated" in err
    stored = json.loads((out / "prompt.json").read_text())["task"]
    assert stored["template"] == "review : {text}\nsentiment :" and stored["verbalizer"] == [" bad", " good"]
    assert stored["split_info"]["custom"]["text_column"] == "review"

    data.unlink()  # predict needs nothing but the artifact (and the model)
    [pred], _ = run_cli(capsys, "predict", str(out), "the movie was fun", "--model", tiny_model_dir)
    assert pred["label"] in ("negative", "positive") and set(pred["scores"]) == {"negative", "positive"}

    # eval on another file: columns from the artifact, or overridden by flags
    other = write(tmp_path / "other.jsonl", [{"t": r["review"], "y": r["sentiment"]} for r in ROWS[:6]])
    [metrics], _ = run_cli(capsys, "eval", str(out), "--data", str(other), "--text-column", "t", "--label-column",
                           "y", "--model", tiny_model_dir)  # fmt: skip
    assert metrics["num_examples"] == 6 and "accuracy" in metrics and metrics["split"] == str(other)
    bad = write(tmp_path / "bad.csv", [{"review": "fun", "sentiment": "meh"}])
    assert main(["eval", str(out), "--data", str(bad), "--model", tiny_model_dir]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:2 (row 1), column 'sentiment': label 'meh' is not one of the task's labels" in err


def test_cli_generation_train_and_eval(tmp_path, capsys, tiny_model_dir):
    rows = [{"q": f"is the movie {w} ?", "a": "yes" if w in GOOD else "no"} for w in GOOD + BAD] * 2
    data = write(tmp_path / "qa.tsv", rows)
    out = tmp_path / "gen"
    [summary], _ = run_cli(capsys, "train", "--data", str(data), "--text-column", "q", "--target-column", "a",
                           "--model", tiny_model_dir, "--out", str(out), *TRAIN)  # fmt: skip
    assert {"exact_match", "token_f1"} <= set(summary["validation"])
    # re-reads qa.tsv
    [metrics], _ = run_cli(capsys, "eval", str(out), "--split", "validation", "--model", tiny_model_dir)
    assert {"exact_match", "token_f1"} <= set(metrics) and metrics["num_examples"] == 2
    [pred], _ = run_cli(capsys, "predict", str(out), "is the movie fun ?", "--model", tiny_model_dir)
    assert isinstance(pred["answer"], str)


def test_read_examples_for_a_stored_task(tmp_path):
    task, *_ = build_custom_task(spec(write(tmp_path / "a.csv", ROWS)))
    stored = Task.from_dict(json.loads(json.dumps(task.to_dict())))  # what an artifact keeps
    examples = read_examples(stored, write(tmp_path / "b.jsonl", ROWS[:4]))
    assert [ex.label for ex in examples] == [0, 1, 0, 1]


def test_cli_zero_shot_on_own_file_and_flag_conflicts(tmp_path, capsys, tiny_model_dir):
    data = str(write(tmp_path / "reviews.csv", ROWS))
    [metrics], _ = run_cli(capsys, "eval", "--zero-shot", "--data", data, "--text-column", "review",
                           "--label-column", "sentiment", "--model", tiny_model_dir)  # fmt: skip
    assert metrics["num_examples"] == 20 and metrics["prompt"] is None  # every row of the file
    assert main(["train", "--task", "sst2", "--data", data, "--out", str(tmp_path / "x"), *TRAIN]) == 2
    assert "--task is a built-in task" in capsys.readouterr().err
    assert main(["train", "--data", data, "--text-column", "review", "--out", str(tmp_path / "x"), *TRAIN]) == 2
    assert "name the label column (--label-column)" in capsys.readouterr().err

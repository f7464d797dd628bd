"""Every numeric option is checked: a bad value is a one-line error (exit 2) before anything runs, never a default
in disguise (`--lr 0`), garbage from uninitialised memory (`--batch-size -1`) or a hang (a prompt longer than the
model's positions). Config dataclasses check their own fields, so the Python API refuses the same values."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from softprompt.api import make_prompt_config, new_prompt
from softprompt.blackbox.search import SearchConfig
from softprompt.cli import main
from softprompt.evaluation import evaluate
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone, tiny_causal_lm, tiny_tokenizer
from softprompt.prompts import build_prompt
from softprompt.prompts.bbt import BBTConfig, BBTv2Config
from softprompt.prompts.prompt_tuning import PromptTuningConfig
from softprompt.prompts.ulpt import ULPTConfig
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task
from softprompt.training.trainer import TrainConfig

TASK = Task("t", "{text}\nLabel:", labels=("no", "yes"), verbalizer=(" no", " yes"))
EXAMPLES = [Example(f"the movie was {w}", label=i % 2) for i, w in enumerate(["good", "bad", "fine", "fun"])]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer()
    tiny_causal_lm("llama", vocab_size=len(tok)).save_pretrained(folder)  # 512 positions, hidden size 32
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    words = ["good", "bad", "fine", "boring"] * 8
    rows = [f"the film was {w},{'yes' if i % 2 else 'no'}\n" for i, w in enumerate(words)]
    path.write_text("text,label\n" + "".join(rows))
    return str(path)


def run(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of the CLI; argparse's usage errors exit through SystemExit(2)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def train_argv(data: str, model_dir: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", data, "--label-column", "label", "--model", model_dir, "--out", str(out), "--steps",
            "2", "--batch-size", "2", "--prompt-len", "2", "--quiet", *extra]  # fmt: skip


# ---------------------------------------------------------------- options of every command, at the parser


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("train", "--max-length", "0"),
        ("train", "--max-train-examples", "0"),
        ("train", "--max-eval-examples", "-1"),
        ("train", "--max-test-examples", "-3"),
        ("eval", "--batch-size", "-1"),
        ("eval", "--batch-size", "0"),
        ("eval", "--limit", "0"),
        ("eval", "--max-length", "-5"),
        ("predict", "--max-length", "0"),
        ("blackbox", "--shots", "0"),
        ("blackbox", "--chunk-size", "-1"),
        ("blackbox", "--max-test-examples", "0"),
        ("serve-lm", "--port", "99999"),
        ("serve", "--port", "99999"),  # was a traceback from bind() once the model had loaded
        ("serve-lm", "--port", "0"),
        ("serve-lm", "--chunk-rows", "0"),
        ("serve-lm", "--max-rows", "-1"),
        ("serve-lm", "--max-length", "1.5"),
        # integers reach torch and numpy seeds, which take 64 bits (was "Overflow when unpacking long long")
        ("train", "--seed", "99999999999999999999"),
        ("blackbox", "--seed", "-99999999999999999999"),
        ("blackbox", "--projection-seed", "18446744073709551616"),
        ("eval", "--seed", "99999999999999999999"),
        ("train", "--steps", "99999999999999999999"),
    ],
)
def test_bad_counts_are_usage_errors(capsys, command, flag, value):
    head = {"predict": ["predict", "dir", "text"], "eval": ["eval", "--zero-shot"]}.get(command, [command])
    tail = ["--out", "x"] if command in ("train", "blackbox") else []
    code, err = run(capsys, [*head, flag, value, *tail])
    assert code == 2
    assert f"argument {flag}:" in err and value in err


@pytest.mark.parametrize("command", ["train", "blackbox"])
def test_an_out_that_is_a_file_is_refused_at_the_parser(capsys, tmp_path, command):
    """Before the model loads (it used to fail after, with '[Errno 17] File exists'), and the file is kept."""
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    code, err = run(capsys, [command, "--task", "sst2", "--model", "no-such-model", "--out", str(afile)])
    assert code == 2 and f"argument --out: {afile} is a file; a run writes into a folder" in err
    assert afile.read_text() == "mine"


def test_data_that_is_a_folder_says_so(capsys, tmp_path, model_dir):
    code, err = run(capsys, train_argv(str(tmp_path), model_dir, tmp_path / "out"))
    assert code == 2 and f"{tmp_path} is a folder; give a data file" in err


def test_eval_of_a_file_refuses_a_split_it_would_ignore(capsys, data, model_dir):
    argv = ["eval", "--zero-shot", "--data", data, "--label-column", "label", "--model", model_dir, "--quiet"]
    code, err = run(capsys, [*argv, "--split", "train"])
    assert code == 2 and "--data scores every row of its file and --split picks a split" in err
    assert run(capsys, argv)[0] == 0


def test_info_takes_no_numeric_option(capsys, tmp_path):
    code, err = run(capsys, ["info", str(tmp_path), "--limit", "3"])
    assert code == 2 and "unrecognized arguments" in err


# ---------------------------------------------------------------- train: the config dataclasses decide


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "0"], "lr must be a positive number, got 0.0"),  # not the method's default
        (["--lr", "-0.1"], "lr must be a positive number"),
        (["--lr", "nan"], "lr must be a positive number"),
        (["--batch-size", "0"], "batch_size must be positive, got 0"),
        (["--batch-size", "-4"], "batch_size must be positive"),
        (["--warmup-steps", "-1"], "warmup_steps must be in [0, steps=2], got -1"),
        (["--steps", "0"], "steps must be positive"),
        (["--eval-every", "0"], "eval_every must be positive"),
        (["--grad-accum", "0"], "grad_accum must be positive"),
        (["--weight-decay", "-1"], "weight_decay must be >= 0"),
        (["--seed", "-1"], "seed must be >= 0, got -1"),
        (["--method", "prompt_tuning", "--init-text", ""], "init='text' needs a non-empty init_text"),
        (["--method", "prompt_tuning", "--init-text", "   "], "init='text' needs a non-empty init_text"),
        (["--method", "prompt_tuning", "--vocab-pool", "0"], "vocab_pool must be positive"),
        (["--rank", "0"], "rank must be positive"),
        (["--rank", "33"], "rank 33 exceeds the model's hidden size 32"),
        (["--projection-scale", "inf"], "projection_scale must be a positive number"),
        (["--projection-seed", "-2"], "projection_seed must be >= 0"),
        (["--prompt-len", "0"], "prompt_len must be positive"),
        (["--prompt-len", "300"], "prompt length 300 + max_length 256 = 556 positions exceed the 512"),
        (["--max-length", "600"], "prompt length 2 + max_length 600 = 602 positions exceed the 512"),
    ],
)
def test_bad_training_values_are_one_line_errors(capsys, tmp_path, data, model_dir, extra, message):
    out = tmp_path / "run"
    code, err = run(capsys, train_argv(data, model_dir, out, *extra))
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # refused before any work


def test_good_values_next_to_the_bad_ones_run(capsys, tmp_path, data, model_dir):
    """The boundaries are where they should be: rank = hidden size, prompt + text = the model's positions."""
    code, err = run(capsys, train_argv(data, model_dir, tmp_path / "a", "--rank", "32", "--warmup-steps", "0",
                                       "--max-length", "510"))  # fmt: skip
    assert code == 0, err


def test_the_api_refuses_the_same_values():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainConfig(lr=0)
    assert TrainConfig(lr=1e-4).resolved(default_lr=0.03).lr == 1e-4  # a small lr is kept, not replaced
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)
    with pytest.raises(ValueError, match="non-empty init_text"):
        PromptTuningConfig(init="text", init_text="")
    with pytest.raises(ValueError, match="projection_scale"):
        ULPTConfig(projection_scale=math.nan)
    with pytest.raises(ValueError, match="alpha and sigma"):
        BBTConfig(alpha=math.inf)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        SearchConfig(prompt=BBTConfig(), seed=-1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        SearchConfig(prompt=ULPTConfig(), sigma=math.nan)
    with pytest.raises(ValueError, match="bounds must be positive"):
        SearchConfig(prompt=BBTConfig(), bounds=math.inf)


def test_bbt_projection_that_cannot_fit_in_memory_is_an_error():
    """dim 10^8 on n=2, D=32 would be a 25 GB projection: refused at once, not an out-of-memory crash."""
    assert build_prompt(BBTConfig(prompt_len=2, dim=100), hidden_size=32).z.numel() == 100  # d > n·D is allowed
    for config in (BBTConfig(prompt_len=2, dim=10**8), BBTv2Config(prompt_len=2, dim=10**8)):
        with pytest.raises(ValueError, match="the projection would hold 6,400,000,000 numbers"):
            build_prompt(config, hidden_size=32)


# ---------------------------------------------------------------- positions: no hang, no silent garbage


def test_a_prompt_beyond_the_models_positions_fails_at_once():
    backbone = tiny_backbone(max_length=64)  # 512 positions
    started = time.perf_counter()
    with pytest.raises(ValueError, match="prompt length 100000 \\+ max_length 64 = 100064 positions exceed the 512"):
        new_prompt(make_prompt_config("ulpt", prompt_len=100_000), backbone)
    assert time.perf_counter() - started < 5
    assert new_prompt(make_prompt_config("ulpt", prompt_len=448), backbone).prompt_len == 448  # 448 + 64 = 512


def test_inputs_past_the_positions_are_refused_where_they_are_built():
    """An artifact's prompt or a long text with a large --max-length reaches `insert`: the width is checked there."""
    backbone = tiny_backbone(max_length=600)
    scorer = Scorer(backbone, TASK)
    long_prompt = PromptInputs(embeds=torch.zeros(1, 510, backbone.hidden_size))
    evaluate(scorer, EXAMPLES, PromptInputs(embeds=torch.zeros(1, 500, backbone.hidden_size)))  # fits
    with pytest.raises(ValueError, match="exceeds the 512 that tiny-llama can encode"):
        evaluate(scorer, EXAMPLES, long_prompt)
    long_text = [Example(" ".join(["good"] * 520), label=1)]
    with pytest.raises(ValueError, match="exceeds the 512"):
        evaluate(scorer, long_text, None)


def test_masked_lm_positions_match_what_the_model_can_encode():
    """RoBERTa numbers positions from padding_idx + 1: its own forward takes 127 of 128 positions, not 128."""
    backbone = tiny_backbone("roberta", max_length=200)
    assert backbone.max_positions == 127
    ids = torch.full((1, 127), 5)
    backbone.model(input_ids=ids)  # the ground truth: fine at 127 ...
    with pytest.raises((IndexError, RuntimeError)):
        backbone.model(input_ids=torch.full((1, 128), 5))  # ... an index error at 128
    with pytest.raises(ValueError, match="exceeds the 127"):
        evaluate(Scorer(backbone, TASK), [Example(" ".join(["good"] * 130), label=0)], None)


def test_seq2seq_has_no_position_limit_to_check():
    assert tiny_backbone("t5").max_positions is None


def test_max_length_must_be_positive():
    with pytest.raises(ValueError, match="max_length must be a positive number of tokens, got 0"):
        tiny_backbone(max_length=0)

"""Gradient-free tuning on tiny models: projections, batched scoring, the CMA-ES loop, artifacts and exact resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from blackbox_script import CONFIG as SCRIPT_CONFIG
from blackbox_script import search as script_search
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

from softprompt.artifact import PromptArtifact
from softprompt.blackbox.search import SearchConfig, run_search, schedule
from softprompt.blackbox.spaces import create_prompt, make_space
from softprompt.checkpoint import load_checkpoint
from softprompt.evaluation import evaluate
from softprompt.evaluator import LocalEvaluator
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.bbt import BBT, BBTv2, derived_seed, projection_std
from softprompt.prompts.ulpt import ULPT
from softprompt.scoring import Scorer, classification_loss
from softprompt.tasks.base import Example, Task

SCRIPT = Path(__file__).parent / "blackbox_script.py"
TRAIN, DEV, TEST = synthetic_examples(16, 0), synthetic_examples(16, 1), synthetic_examples(32, 2)


@pytest.fixture(scope="module")
def backbone():
    return learnable_backbone()


@pytest.fixture(scope="module")
def evaluator(backbone):
    return LocalEvaluator(Scorer(backbone, synthetic_task()), chunk_size=64)


@pytest.fixture(autouse=True)
def one_thread():
    # exact-resume comparisons need the same float reductions in every run and in the subprocess
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(method: str, **kw) -> SearchConfig:
    base = {"prompt_len": 4, "popsize": 6, "budget": 120, "eval_every": 24, "seed": 1}
    if method != "ulpt":
        base["dim"] = 12
    if method == "bbtv2":
        base["num_layers"] = 2
    return SearchConfig.from_flat(method, **{**base, **kw})


def make(evaluator, config: SearchConfig):
    return create_prompt(evaluator, config.prompt, TRAIN, config.seed)


def train_loss(evaluator, prompts, deep=None):
    scores = evaluator.label_scores(TRAIN, PromptInputs(embeds=prompts, deep=deep))
    labels = torch.tensor([ex.label for ex in TRAIN]).expand(len(prompts), -1)
    return classification_loss(scores, labels).mean(-1)


# --- projections ---------------------------------------------------------------------------------------------------
def test_projection_std_follows_bbt_formula(evaluator, backbone):
    assert projection_std(0.5, 400, alpha=0.2, sigma=0.4) == pytest.approx(0.2 * 0.5 / (20 * 0.4))
    config = small("bbt", dim=200, alpha=0.5, sigma=0.25)
    prompt = make(evaluator, config)
    std_hat = backbone.word_embeddings.weight.double().std(correction=0).item()
    expected = 0.5 * std_hat / (math.sqrt(200) * 0.25)
    assert prompt.config.projection_std == pytest.approx(expected, rel=1e-12)
    assert prompt.projection.weight.std().item() == pytest.approx(expected, rel=0.02)  # A ~ N(0, std²), 25.6K draws
    # P₀ is made of real token embeddings, recorded by id
    ids = torch.tensor(prompt.config.base_token_ids)
    assert torch.equal(prompt.base, backbone.embed(ids.unsqueeze(0))[0])


def test_bbtv2_has_one_projection_per_layer_scaled_by_that_layers_hidden_std(evaluator):
    prompt = make(evaluator, small("bbtv2"))
    hidden = evaluator.hidden_state_stds(TRAIN, PromptInputs(embeds=prompt.base[None]))
    sigma_hat = [evaluator.embedding_std(), *hidden[1:]]  # layer 0: word embeddings, as the authors
    assert prompt.config.projection_stds == pytest.approx([projection_std(s, 12, 0.2, 0.2) for s in sigma_hat])
    a0, a1 = prompt.projection(0), prompt.projection(1)
    assert a0.shape == (12, 4 * 32) and not torch.allclose(a0 / a0.std(), a1 / a1.std())
    assert derived_seed(0, 1, 1) == derived_seed(0, 1, 1) != derived_seed(0, 1, 0)
    assert derived_seed(0, 1, 1) == 1554199118406742183  # pinned: artifacts depend on it


# --- batched population scoring ------------------------------------------------------------------------------------
@pytest.mark.parametrize("multi_token", [False, True])
def test_population_batching_matches_one_by_one(backbone, multi_token):
    task = synthetic_task()
    if multi_token:
        task = Task("multi", task.template, labels=task.labels, verbalizer=(" not good", " very good"))
    scorer = Scorer(backbone, task)
    assert scorer.single_token != multi_token
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randn(5, 4, 32, generator=gen)
    deep = torch.randn(2, 5, 4, 32, generator=gen) * 0.3
    one_pass = LocalEvaluator(scorer, chunk_size=10_000)
    chunked = LocalEvaluator(scorer, chunk_size=7)  # splits candidates and (multi-token) examples across passes
    for ev in (one_pass, chunked):
        batched = ev.label_scores(TRAIN, PromptInputs(embeds=prompts, deep=deep))
        assert batched.shape == (5, len(TRAIN), 2)
        encoded = scorer.encode(TRAIN)
        for p in range(5):
            alone = scorer.label_scores(encoded, PromptInputs(embeds=prompts[p : p + 1], deep=deep[:, p : p + 1]))
            torch.testing.assert_close(batched[p], alone, atol=1e-5, rtol=0)
    assert one_pass.forward_passes == 1  # 5 candidates × 16 examples (× 2 labels) in one forward


def test_population_parts_are_grouped_by_length_and_padded_only_to_their_own_longest(backbone):
    """Texts of 1 to 24 words, shuffled: parts of similar length cut the padded positions the model runs, and the
    scores, put back in the examples' order, are each example's own."""
    scorer = Scorer(backbone, synthetic_task())
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randperm(24, generator=gen) + 1
    examples = [
        Example(" ".join(["plot"] * int(w) + ["great" if i % 2 else "awful"]), i % 2) for i, w in enumerate(lengths)
    ]
    prompts = PromptInputs(embeds=torch.randn(4, 3, 32, generator=gen))
    positions = []
    hook = backbone.layers[0].register_forward_pre_hook(
        lambda _, args, kwargs: positions.append((args[0] if args else kwargs["hidden_states"]).shape[:2].numel()),
        with_kwargs=True,
    )
    try:
        evaluator = LocalEvaluator(scorer, chunk_size=24, prefix=False)  # 6 examples x 4 candidates a pass
        scores = evaluator.label_scores(examples, prompts)
    finally:
        hook.remove()
    for p in range(4):
        for k, ex in enumerate(examples):
            alone = scorer.label_scores(scorer.encode([ex]), prompts.select(torch.tensor([p])))
            torch.testing.assert_close(scores[p, k], alone[0], atol=1e-5, rtol=0)
    assert evaluator.forward_passes == 4  # ⌈4 candidates × 24 examples / 24 rows⌉
    # each pass: 4 candidates x 6 examples of similar length, padded to the part's longest, plus the 3 prompt vectors
    own = sorted(int(scorer.encode([ex]).encoded.attention_mask.sum()) for ex in examples)
    assert sum(positions) == sum(4 * 6 * (max(own[i : i + 6]) + 3) for i in range(0, 24, 6))
    assert sum(positions) < 0.75 * 4 * 24 * (max(own) + 3)  # every row padded to the longest text, as before


# --- the search ----------------------------------------------------------------------------------------------------
def test_bbt_search_counts_calls_lowers_train_loss_and_saves_a_loadable_artifact(evaluator, backbone, tmp_path):
    config = small("bbt", budget=240, eval_every=48)
    start = make(evaluator, config)
    initial = train_loss(evaluator, start.prompts(torch.zeros(1, 12))).item()
    result = run_search(evaluator, TRAIN, DEV, config, tmp_path, test=TEST, progress=False)

    assert result.calls == 240 and isinstance(result.prompt, BBT)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss_min" in r] == list(range(6, 241, 6))  # popsize calls per generation
    assert [r["step"] for r in log if r.get("split") == "validation"] == [48, 96, 144, 192, 240]
    artifact = PromptArtifact.from_pretrained(tmp_path, backbone)
    assert artifact.metrics["train_loss"] < initial - 0.05  # CMA-ES went downhill
    assert artifact.metrics["calls"] == 240 and artifact.metrics["best_calls"] == result.best_calls
    # same format as gradient-trained prompts: the normal evaluation path reproduces the search's test score
    assert artifact.prompt.num_trainable_parameters() == 12
    assert evaluate(Scorer(backbone, synthetic_task()), TEST, artifact.prompt)["loss"] == pytest.approx(
        result.test["loss"], abs=1e-5
    )


def test_bbtv2_gives_each_layer_one_generation_per_round(evaluator, backbone, tmp_path):
    config = small("bbtv2", budget=6 * 2 * 4)  # 4 rounds over 2 layers
    assert schedule(config, 2) == [0, 1, 0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="below one BBTv2 round"):
        schedule(small("bbtv2", budget=11), 2)
    result = run_search(evaluator, TRAIN, DEV, config, tmp_path, test=TEST, progress=False)
    tensors, state = load_checkpoint(tmp_path / "checkpoint")
    assert tensors["history.es"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert result.calls == state["calls"] == 48
    artifact = PromptArtifact.from_pretrained(tmp_path, backbone)
    assert isinstance(artifact.prompt, BBTv2) and artifact.prompt.num_trainable_parameters() == 2 * 12
    assert artifact.prompt.deep_prompts().shape == (2, 4, 32)
    got = evaluate(Scorer(backbone, synthetic_task()), TEST, artifact.prompt)
    assert got["loss"] == pytest.approx(result.test["loss"], abs=1e-5)


def test_bbtv2_candidates_keep_other_layers_at_their_committed_value(evaluator):
    prompt = make(evaluator, small("bbtv2"))
    space = make_space(prompt, 0.0)
    space.commit(0, torch.ones(12, dtype=torch.float64).numpy())
    candidates = space.candidates(1, torch.randn(3, 12))
    prompts, deep = candidates.embeds, candidates.deep
    assert prompts.shape == (3, 4, 32) and deep.shape == (2, 3, 4, 32)
    layer0 = prompt.layer_prompts(0, torch.ones(1, 12))[0]
    for p in range(3):
        torch.testing.assert_close(deep[0, p], layer0)


def test_gradient_free_ulpt_searches_z_scale_and_shift(evaluator, backbone, tmp_path):
    config = small("ulpt", rank=2, search_scale_shift=True, budget=180, sigma=0.5)
    result = run_search(evaluator, TRAIN, DEV, config, tmp_path, progress=False)
    artifact = PromptArtifact.from_pretrained(tmp_path, backbone)
    prompt = artifact.prompt
    assert isinstance(prompt, ULPT) and prompt.num_trainable_parameters() == 4 * 2 + 2 * 32
    if result.best_calls > 0:  # the best-dev prompt is a searched one: scale/shift moved
        assert not torch.equal(prompt.shift, torch.zeros(32))
    start = ULPT(prompt.config, 32)
    start.initialize(None, config.seed)
    initial = train_loss(evaluator, start.vectors().unsqueeze(0).detach()).item()
    assert artifact.metrics["train_loss"] < initial


def test_evaluator_without_token_embeddings_needs_normal_init(evaluator):
    from softprompt.remote.client import RemoteEvaluator

    class Remote:  # the HTTP client's refusal to embed tokens, the local model for the rest
        vocab_embeddings = RemoteEvaluator.vocab_embeddings

        def __getattr__(self, name):
            return getattr(evaluator, name)

    with pytest.raises(ValueError, match="init='normal'"):
        make(Remote(), small("bbt"))
    prompt = make(Remote(), small("bbt", init="normal"))
    assert prompt.config.base_token_ids is None
    assert prompt.base.std().item() == pytest.approx(evaluator.embedding_std(), rel=0.25)


# --- exact resume --------------------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def assert_same_run(reference: Path, resumed: Path) -> None:
    ref, got = PromptArtifact.from_pretrained(reference), PromptArtifact.from_pretrained(resumed)
    ref_state, got_state = ref.prompt.state_tensors(), got.prompt.state_tensors()
    assert ref_state.keys() == got_state.keys()
    for name in ref_state:
        assert torch.equal(ref_state[name], got_state[name]), name
    assert ref.metrics == got.metrics
    # the log too: every generation's losses and every validation once, in order, as if never interrupted
    assert without_timing(reference / "log.jsonl") == without_timing(resumed / "log.jsonl")


def without_timing(log: Path) -> list[dict]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if "timing" not in r and "run_s" not in r]


@pytest.mark.parametrize("method", ["bbt", "bbtv2", "ulpt"])
def test_interrupted_search_resumes_exactly(evaluator, tmp_path, method):
    config = small(method, budget=120, search_scale_shift=method == "ulpt")
    run_search(evaluator, TRAIN, DEV, config, tmp_path / "ref", test=TEST, progress=False)

    def stop_after_7(info):
        if info["generation"] == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_search(evaluator, TRAIN, DEV, config, tmp_path / "cut", test=TEST, progress=False,
                   callback=stop_after_7)  # fmt: skip
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(evaluator, TRAIN, DEV, config, tmp_path / "cut", progress=False)
    with pytest.raises(ValueError, match=r"differs from the checkpoint in .*search_config\.seed: 1 -> 2"):
        run_search(evaluator, TRAIN, DEV, small(method, seed=2), tmp_path / "cut", progress=False, resume=True)
    resumed = run_search(evaluator, TRAIN, DEV, config, tmp_path / "cut", test=TEST, progress=False, resume=True)
    assert resumed.timing["replay_s"] > 0
    assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_a_search_resumes_only_in_its_own_number_format(tmp_path):
    """A search started in float32 and continued in bfloat16 (`--dtype auto` on another CPU) would rank the rest
    of its candidates on other scores: refused, naming the format to pass."""
    bf16 = learnable_backbone()
    bf16.model.to(torch.bfloat16)
    config = small("bbt", budget=40)
    float32 = LocalEvaluator(Scorer(learnable_backbone(), synthetic_task()), chunk_size=64)
    run_search(float32, TRAIN, DEV, config, tmp_path, progress=False)
    bfloat16 = LocalEvaluator(Scorer(bf16, synthetic_task()), chunk_size=64)
    with pytest.raises(ValueError, match=r'dtype: "float32" -> "bfloat16"; .*pass --dtype float32'):
        run_search(bfloat16, TRAIN, DEV, config, tmp_path, progress=False, resume=True)
    run_search(float32, TRAIN, DEV, config, tmp_path, progress=False, resume=True)


def test_kill_minus_nine_then_resume_ends_with_the_same_prompt(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), "--slow"], env=env)
    script_search(str(reference))  # meanwhile, the uninterrupted run in this process
    total = len(schedule(SCRIPT_CONFIG, 2))
    latest = killed / "checkpoint" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 5 * SCRIPT_CONFIG.popsize:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = json.loads(latest.read_text())["step"]  # model calls
    assert 5 * SCRIPT_CONFIG.popsize <= killed_at < total * SCRIPT_CONFIG.popsize, (
        "the search should have been killed part-way"
    )

    script_search(str(killed), resume=True)
    assert_same_run(reference, killed)


# --- command line --------------------------------------------------------------------------------------------------
def test_cli_blackbox_then_eval_on_the_saved_prompt(tmp_path, data_dir, capsys):
    from softprompt.cli import main
    from softprompt.models.tiny import tiny_backbone

    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    common = ["--model", str(tmp_path / "model"), "--data-dir", str(data_dir)]
    argv = ["blackbox", "--task", "sst2", "--method", "bbtv2", "--shots", "4", "--budget", "40", "--popsize", "10",
            "--dim", "8", "--prompt-len", "4", "--eval-every", "20", "--max-test-examples", "24", "--quiet",
            "--out", str(tmp_path / "run"), *common]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["calls"] == 40 and summary["searched_parameters"] == 2 * 8
    assert main(["eval", str(tmp_path / "run"), "--limit", "24", *common]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["method"] == "bbtv2" and scored["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_shared_lower_layers_are_computed_once_with_identical_scores(arch):
    from softprompt.models.tiny import tiny_backbone
    from softprompt.scoring import Scorer

    backbone = tiny_backbone(arch)
    task = Task("t", "review : {text} . sentiment :", labels=("neg", "pos"), verbalizer=(" bad", " good"))
    examples = [Example(t, label=i % 2) for i, t in enumerate(["a good movie", "bad", "it was very boring film"])]
    evaluator = LocalEvaluator(Scorer(backbone, task), chunk_size=4)
    generator = torch.Generator().manual_seed(0)
    num, n, d = 5, 3, backbone.hidden_size
    prompts = torch.randn(1, n, d, generator=generator).expand(num, -1, -1)
    deep = torch.randn(backbone.num_layers, 1, n, d, generator=generator).repeat(1, num, 1, 1)
    layer = backbone.num_layers - 1
    deep[layer] = torch.randn(num, n, d, generator=generator)  # only the top layer differs between candidates
    positions = []  # the MLP of layer 0 only runs when layer 0 really runs
    handle = backbone.layers[0].mlp.register_forward_pre_hook(
        lambda _, args: positions.append(args[0].shape[:2].numel())
    )
    try:
        reused = evaluator.label_scores(examples, PromptInputs(embeds=prompts, deep=deep), shared_layers=layer)
    finally:
        handle.remove()
    scorer, encoded = evaluator.scorer, evaluator.scorer.encode(examples)
    for c in range(num):  # ground truth: each candidate alone, its prompt inserted in every row, every layer run
        alone = scorer.label_scores(encoded, PromptInputs(embeds=prompts[c : c + 1], deep=deep[:, c : c + 1]))
        torch.testing.assert_close(reused[c], alone, atol=1e-5, rtol=0)
    # layer 0 ran once per example (without the prompt's positions), and once per candidate on its n prompt positions
    # (its key/value prefix), never per candidate and example
    own = [int(scorer.encode([ex]).encoded.attention_mask.sum()) for ex in examples]
    assert sum(positions) == sum(own) + num * n

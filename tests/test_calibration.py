"""One calibration: gradient training (`sp.tune`) and CMA-ES search (`run_search`) measure the same projection stds
for BBT and BBTv2 from the same config (alpha, sigma, the per-layer hidden-state stds), and start from the same P₀."""

import pytest
import torch
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

import softprompt as sp
from softprompt.blackbox.search import SearchConfig, run_search
from softprompt.evaluator import LocalEvaluator
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.bbt import projection_std
from softprompt.scoring import Scorer
from softprompt.training.trainer import TrainConfig

TRAIN, DEV = synthetic_examples(12, 0), synthetic_examples(8, 1)
OPTIONS = {"prompt_len": 4, "dim": 12, "alpha": 0.7, "sigma": 0.3, "projection_seed": 5}  # not the defaults
SEED = 2


@pytest.mark.parametrize("method", ["bbt", "bbtv2"])
def test_gradient_and_cma_es_paths_calibrate_identically(tmp_path, method):
    backbone, task = learnable_backbone(), synthetic_task()
    train_config = TrainConfig(steps=1, batch_size=4, eval_every=1, seed=SEED)
    sp.tune(task, out=tmp_path / "grad", method=method, model=backbone, splits=(TRAIN, DEV, None),
            train_config=train_config, progress=False, **OPTIONS)  # fmt: skip
    gradient = sp.load(tmp_path / "grad", model=backbone).artifact.prompt

    evaluator = LocalEvaluator(Scorer(backbone, task))
    layers = {"num_layers": backbone.num_layers} if method == "bbtv2" else {}
    config = SearchConfig.from_flat(method, popsize=4, budget=4 * backbone.num_layers, eval_every=4, seed=SEED,
                                    **OPTIONS, **layers)  # fmt: skip
    search = run_search(evaluator, TRAIN, DEV, config, tmp_path / "cma", progress=False).prompt

    # the ground truth: BBT's formula on the embedding std (layer 0) and the hidden-state stds with P₀ in place
    measured = [evaluator.embedding_std()]
    if method == "bbtv2":
        measured += evaluator.hidden_state_stds(TRAIN, PromptInputs(embeds=search.base[None]))[1:]
    expected = [projection_std(s, OPTIONS["dim"], OPTIONS["alpha"], OPTIONS["sigma"]) for s in measured]
    if method == "bbt":
        assert gradient.config.projection_std == search.config.projection_std == expected[0]
    else:
        assert gradient.config.projection_stds == search.config.projection_stds == expected
        assert len(set(expected)) == backbone.num_layers  # one std per layer, not one for all
    assert torch.equal(gradient.base, search.base)  # the same P₀ from the same seed

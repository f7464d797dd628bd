"""Subprocess entry for the kill -9 resume test: a BBTv2 search on the synthetic task with a tiny model.

usage: python blackbox_script.py OUT [--resume] [--slow]   (--slow sleeps after each generation so a kill lands mid-run)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

from softprompt.blackbox.search import SearchConfig, run_search
from softprompt.evaluator import LocalEvaluator
from softprompt.scoring import Scorer

CONFIG = SearchConfig.from_flat(
    "bbtv2", dim=12, prompt_len=4, num_layers=2, popsize=6, budget=180, eval_every=24, seed=3
)


def search(out: str, resume: bool = False, slow: bool = False) -> None:
    task = synthetic_task()
    evaluator = LocalEvaluator(Scorer(learnable_backbone(), task), chunk_size=48)
    run_search(
        evaluator,
        synthetic_examples(12, 0),
        synthetic_examples(12, 1),
        CONFIG,
        out,
        test=synthetic_examples(16, 2),
        resume=resume,
        progress=False,
        callback=(lambda info: time.sleep(0.15)) if slow else None,
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    search(sys.argv[1], resume="--resume" in sys.argv, slow="--slow" in sys.argv)

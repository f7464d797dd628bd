"""Subprocess entry for the kill -9 resume test: trains ULPT on the synthetic task with a tiny model.

usage: python train_script.py OUT [--resume] [--slow]   (--slow sleeps after each checkpoint so a kill lands mid-run)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

from softprompt import runs
from softprompt.api import make_prompt_config, new_prompt
from softprompt.scoring import Scorer
from softprompt.training import trainer

# Evaluations every 20 steps, checkpoints at least every 10 ms in between: a kill between evaluations loses nothing.
CONFIG = trainer.TrainConfig(
    steps=40, batch_size=4, grad_accum=2, lr=0.1, warmup_steps=5, eval_every=20, log_every=5, checkpoint_every_s=0.01
)

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, resume, slow = sys.argv[1], "--resume" in sys.argv, "--slow" in sys.argv
    if slow:
        original = runs.save_checkpoint

        def slow_checkpoint(*args, **kwargs):
            path = original(*args, **kwargs)
            time.sleep(0.4)
            return path

        runs.save_checkpoint = slow_checkpoint
    backbone = learnable_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
    scorer = Scorer(backbone, synthetic_task())
    trainer.train_prompt(
        scorer,
        prompt,
        synthetic_examples(48, 0),
        synthetic_examples(16, 1),
        CONFIG,
        out,
        test=synthetic_examples(16, 2),
        resume=resume,
        progress=False,
    )

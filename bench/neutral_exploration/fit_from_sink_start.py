"""Exploration for bench/results/ulpt_neutral_init_rejected.md (200 seeded SST-2 dev sentences, /work/shared/data).

ULPT --neutral-init start, then N steps of fit_to_template; score 200 dev.
Usage: N LR STEPS TAG
"""

import sys
import time

import torch

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models import load_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.training.neutral import fit_to_template

torch.set_num_threads(1)

n, lr, steps, tag = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
bb = load_backbone("smollm2-135m-instruct")
task = get_task("sst2")
test = subset(task.load("test", "/work/shared/data"), 200, 0)
train = task.load("train", "/work/shared/data")
val = task.load("validation", "/work/shared/data")
sc = Scorer(bb, task)
p = new_prompt(make_prompt_config("ulpt", n, rank=2, neutral_init=True), bb, 0)
v = p.vectors().detach()
print(tag, "rms", v.pow(2).mean(-1).sqrt()[:3].tolist(), flush=True)
t = time.perf_counter()
r = fit_to_template(sc, p, train, steps=steps, lr=lr, batch_size=8, held_out=val[:24], check_every=5)
print(
    tag,
    "losses",
    [round(x, 3) for x in r.losses],
    "held",
    r.held_out,
    "best",
    r.best_step,
    time.perf_counter() - t,
    flush=True,
)
with torch.no_grad():
    pre = bb.prompt_prefix(p.materialize())
print(tag, "acc200", evaluate(sc, test, pre.detach())["accuracy"], flush=True)

"""Exploration for bench/results/ulpt_neutral_init_rejected.md (200 seeded SST-2 dev sentences, /work/shared/data).

Fit the authors' ULPT start (z ~ N(0,1)) with softprompt.training.neutral.fit_to_template; score 200 dev.
Usage: N LR STEPS BATCH TAG
"""

import json
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

n, lr, steps, bs = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tag = sys.argv[5]
bb = load_backbone("smollm2-135m-instruct")
task = get_task("sst2")
test = subset(task.load("test", "/work/shared/data"), 200, 0)
train = task.load("train", "/work/shared/data")
held, fit_texts = train[:24], train[24:]
sc = Scorer(bb, task)
p = new_prompt(make_prompt_config("ulpt", n, rank=2), bb, 0)
t = time.perf_counter()
r = fit_to_template(sc, p, fit_texts, steps=steps, lr=lr, batch_size=bs, held_out=held, check_every=5)
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
acc = evaluate(sc, test, pre.detach())["accuracy"]
print(tag, "acc200", acc, flush=True)
json.dump(
    {
        "tag": tag,
        "n": n,
        "lr": lr,
        "steps": steps,
        "bs": bs,
        "losses": r.losses,
        "held": r.held_out,
        "best": r.best_step,
        "acc200": acc,
    },
    open(f"/tmp/nx/{tag}.json", "w"),
)
torch.save(p.state_dict(), f"/tmp/nx/{tag}.pt")

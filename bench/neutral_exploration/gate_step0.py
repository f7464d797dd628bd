"""Exploration for bench/results/ulpt_neutral_init_rejected.md, section 4 (made before the library had
PromptInputs.gate: it patches CausalLMBackbone._run to pass a 4-d mask with offset g on the prefix columns).

The authors' ULPT start (n = N, r = 2, seed 0) scored at step 0 with the prompt's columns offset by g in 0, -4, -8,
-12 (and no offset) on the seeded SUBSET-sentence SST-2 dev subset. Usage: N SUBSET (the log: 100 200).
"""

import sys

import torch
from gate_patch import GATE, install

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models import load_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task

torch.set_num_threads(1)
install()
G = GATE
bb = load_backbone("smollm2-135m-instruct")
task = get_task("sst2")
test = subset(task.load("test", "/work/shared/data"), int(sys.argv[2]), 0)
sc = Scorer(bb, task)
n = int(sys.argv[1])
cfg = make_prompt_config("ulpt", n, rank=2)
p = new_prompt(cfg, bb, seed=0)
with torch.no_grad():
    pre = bb.as_prefix(p.materialize())
print("bare", evaluate(sc, test, None)["accuracy"], flush=True)
for g in [None, 0.0, -4.0, -8.0, -12.0]:
    G["g"] = g
    with torch.no_grad():
        print(n, g, evaluate(sc, test, pre)["accuracy"], flush=True)

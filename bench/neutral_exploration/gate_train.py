"""Exploration for bench/results/ulpt_neutral_init_rejected.md, section 4 (made before the library had
PromptInputs.gate: it patches CausalLMBackbone._run). A ULPT prompt (n = N, r = 2) trained with Adam (lr 0.03, batch
8) behind a learnable gate starting at G0 with its own learning rate GLR (G0 = -1e4: no gate, the authors' start),
scored on 200 seeded SST-2 dev sentences. Usage: N G0 GLR STEPS SINK DATA EVAL_EVERY, DATA = few (16 per label) or
full (1,000 per label); SINK = 1 used the sink start of commit 77b65fd's --neutral-init (that commit only). The
logs gate_t_* come from an earlier revision that always trained few-shot and evaluated every 15 (then 20) steps.
An eighth argument RAMP > 0 opens the gate on a schedule instead, g = G0·max(0, 1 - step/RAMP) (the prompt faded in;
logs gate_fade_*, made by an earlier copy of this script as fade_train.py).
"""

import sys
import time

import torch
from gate_patch import GATE, install

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models import load_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.tasks.fewshot import sample_k_shot

torch.set_num_threads(1)
n, g0, glr, steps, neutral = (
    int(sys.argv[1]),
    float(sys.argv[2]),
    float(sys.argv[3]),
    int(sys.argv[4]),
    sys.argv[5] == "1",
)
install()
G = GATE
RAMP = int(sys.argv[8]) if len(sys.argv) > 8 else 0  # > 0: the gate opens on a schedule
bb = load_backbone("smollm2-135m-instruct")
task = get_task("sst2")
test = subset(task.load("test", "/work/shared/data"), 200, 0)
train = sample_k_shot(task.load("train", "/work/shared/data"), 16 if sys.argv[6] == "few" else 1000, 0)
sc = Scorer(bb, task)
p = new_prompt(make_prompt_config("ulpt", n, rank=2, neutral_init=neutral), bb, seed=0)
gate = torch.nn.Parameter(torch.tensor(g0))
G["g"] = gate if g0 > -1e3 else None


def ev():
    with torch.no_grad():
        return evaluate(sc, test, bb.as_prefix(p.materialize()))["accuracy"]


print("step0", ev(), flush=True)
groups = [{"params": [q for q in p.parameters() if q.requires_grad], "lr": 3e-2}]
if G["g"] is not None and not RAMP:
    groups.append({"params": [gate], "lr": glr})
opt = torch.optim.Adam(groups)
gen = torch.Generator().manual_seed(0)
t = time.time()
for s in range(steps):
    if RAMP:  # faded in: g = G0·max(0, 1 - step/RAMP), not learnt
        with torch.no_grad():
            gate.fill_(g0 * max(0.0, 1 - s / RAMP))
    idx = torch.randperm(len(train), generator=gen)[:8]
    batch = sc.encode([train[i] for i in idx])
    loss = sc.loss(batch, bb.as_prefix(p.materialize()))
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(s, round(loss.item(), 4), round(gate.item(), 3), round(time.time() - t), flush=True)
    if (s + 1) % int(sys.argv[7]) == 0:
        print("eval", s + 1, ev(), flush=True)

"""Exploration for bench/results/ulpt_neutral_init_rejected.md (200 seeded SST-2 dev sentences, /work/shared/data).

Prompt = [TOKEN, C*TOKEN x (N-1)] as raw vectors; score 200 dev. Usage: N TOKEN C
"""

import sys

import torch

from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models import load_backbone
from softprompt.models.inputs import PromptInputs
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task

torch.set_num_threads(1)

n, first, rest = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
bb = load_backbone("smollm2-135m-instruct")
task = get_task("sst2")
test = subset(task.load("test", "/work/shared/data"), 200, 0)
sc = Scorer(bb, task)
ids = bb.tokenize(first)
e = bb.embed(torch.tensor([ids[:1]]))[0, 0].detach().float()
emb = torch.zeros(1, n, e.shape[0])
emb[0, 0] = e
emb[0, 1:] = rest * e
with torch.no_grad():
    pre = bb.prompt_prefix(PromptInputs(embeds=emb))
acc = evaluate(sc, test, pre)["accuracy"]
print("closed", n, repr(first), rest, acc, flush=True)

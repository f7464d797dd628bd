"""The mixed-batch ground truth every backbone test uses: each row of a batch of different prompts scores exactly what
that row's prompt gives its text alone."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from softprompt.models.backbone import Backbone
from softprompt.models.inputs import PromptInputs


def assert_each_row_as_alone(
    bb: Backbone, texts: Sequence[str], conts: Sequence[Sequence[int]], rows: Sequence[PromptInputs]
) -> torch.Tensor:
    """Score `texts` with `PromptInputs.stack(rows)` in one batch, check every row against it alone (1e-5), and
    return the batch's hidden states."""
    with torch.no_grad():
        mixed = bb.hidden_states(bb.encode(texts, conts), PromptInputs.stack(rows))
        for i, (text, cont) in enumerate(zip(texts, conts, strict=True)):
            alone = bb.hidden_states(bb.encode([text], [cont]), rows[i])
            torch.testing.assert_close(mixed[i, : len(cont)], alone[0], atol=1e-5, rtol=1e-5)
    return mixed

"""Search spaces: how each black-box method turns CMA-ES search vectors into prompts, and how it starts.

The prompt module always holds the committed solution (what dev/test scoring and the artifact use); `candidates`
builds a whole population's prompts with one matmul, (P, dim) @ (dim, n·D).

* bbt:   x = z ∈ R^d;              prompt = P₀ + A·z
* bbtv2: x = z_l ∈ R^d, per layer; prompt = P₀, deep[l] = A_l·z_l, other layers at their committed value
* ulpt:  x = z (n·r) [+ scale, shift (D each)]; prompt = (z·A) ⊙ scale + shift
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from softprompt.blackbox.evaluator import PromptEvaluator
from softprompt.prompts.base import SoftPrompt
from softprompt.prompts.bbt import BBT, BBTConfig, BBTv2, BBTv2Config, normal_base, projection_std
from softprompt.prompts.ulpt import ULPT, ULPTConfig
from softprompt.tasks.base import Example

if TYPE_CHECKING:
    from softprompt.blackbox.search import BlackBoxConfig


class Space:
    """The committed solution lives in the prompt module; `candidates` builds a population's prompts in one matmul."""

    num_es = 1

    def __init__(self, prompt: SoftPrompt) -> None:
        self.prompt = prompt

    def x0(self, es: int) -> np.ndarray:
        raise NotImplementedError

    def stds(self, es: int) -> np.ndarray | None:
        return None  # per-coordinate step-size multipliers (pycma's CMA_stds)

    def candidates(self, es: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(P, dim) search vectors -> prompts (P, n, D) and deep prompts (L, P, n, D) or None."""
        raise NotImplementedError

    def commit(self, es: int, x: np.ndarray) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def current(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The committed solution as (1, n, D) and (L, 1, n, D) | None."""
        deep = self.prompt.deep_prompts()
        return self.prompt().detach().unsqueeze(0), None if deep is None else deep.unsqueeze(1)


class BBTSpace(Space):
    prompt: BBT

    def x0(self, es: int) -> np.ndarray:
        return np.zeros(self.prompt.config.dim)

    @torch.no_grad()
    def candidates(self, es: int, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.prompt.prompts(x), None

    @torch.no_grad()
    def commit(self, es: int, x: np.ndarray) -> None:
        self.prompt.z.copy_(torch.from_numpy(x))


class BBTv2Space(Space):
    """Keeps the committed per-layer additions (L, n, D) so a generation regenerates only its own layer's A_l."""

    prompt: BBTv2

    def __init__(self, prompt: BBTv2) -> None:
        super().__init__(prompt)
        self.num_es = prompt.config.num_layers
        self._deep = torch.zeros(self.num_es, prompt.prompt_len, prompt.hidden_size)
        self._stale = set(range(self.num_es))
        self._weight: tuple[int, torch.Tensor] | None = None  # the A_l of the generation in flight

    def x0(self, es: int) -> np.ndarray:
        return np.zeros(self.prompt.config.dim)

    def _refresh(self) -> None:
        for layer in sorted(self._stale):
            self._deep[layer] = self.prompt.layer_prompts(layer, self.prompt.z[layer : layer + 1])[0]
        self._stale.clear()

    @torch.no_grad()
    def candidates(self, es: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._stale.discard(es)  # this layer is replaced by the candidates anyway
        self._refresh()
        weight = self.prompt.projection(es)
        self._weight = (es, weight)
        deep = self._deep.unsqueeze(1).repeat(1, len(x), 1, 1)
        deep[es] = self.prompt.layer_prompts(es, x, weight)
        return self.prompt.base.expand(len(x), -1, -1), deep

    @torch.no_grad()
    def commit(self, es: int, x: np.ndarray) -> None:
        self.prompt.z[es].copy_(torch.from_numpy(x))
        if self._weight is not None and self._weight[0] == es:
            self._deep[es] = self.prompt.layer_prompts(es, self.prompt.z[es : es + 1], self._weight[1])[0]
        else:  # replaying: recompute lazily, once
            self._stale.add(es)
        self._weight = None

    @torch.no_grad()
    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._refresh()
        return self.prompt.base.unsqueeze(0), self._deep.unsqueeze(1).clone()


class ULPTSpace(Space):
    """x = [z (n·r)] or [z, scale (D), shift (D)]; p = (z·A) ⊙ scale + shift for the whole population at once."""

    prompt: ULPT

    def __init__(self, prompt: ULPT, search_scale_shift: bool, shift_std: float) -> None:
        super().__init__(prompt)
        self.scale_shift = search_scale_shift
        self.shift_std = shift_std
        self.nr = prompt.z.numel()

    def x0(self, es: int) -> np.ndarray:
        p = self.prompt
        parts = [p.z.flatten()] + ([p.scale, p.shift] if self.scale_shift else [])
        return torch.cat(parts).detach().double().numpy()

    def stds(self, es: int) -> np.ndarray | None:
        if not self.scale_shift:
            return None
        d = self.prompt.hidden_size
        # z ~ N(0, 1) scale; scale moves by ~10%; shift by about one embedding std (times sigma)
        return np.concatenate([np.ones(self.nr), np.full(d, 0.1), np.full(d, self.shift_std)])

    @torch.no_grad()
    def candidates(self, es: int, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        p, d = self.prompt, self.prompt.hidden_size
        prompts = p.projection(x[:, : self.nr].view(len(x), p.prompt_len, -1))
        if self.scale_shift:
            return prompts * x[:, None, self.nr : self.nr + d] + x[:, None, self.nr + d :], None
        return prompts * p.scale + p.shift, None

    @torch.no_grad()
    def commit(self, es: int, x: np.ndarray) -> None:
        x_t, p, d = torch.from_numpy(x).float(), self.prompt, self.prompt.hidden_size
        p.z.copy_(x_t[: self.nr].view_as(p.z))
        if self.scale_shift:
            p.scale.copy_(x_t[self.nr : self.nr + d])
            p.shift.copy_(x_t[self.nr + d :])


def make_space(prompt: SoftPrompt, config: BlackBoxConfig, shift_std: float = 0.0) -> Space:
    """The search space for a prompt module; `shift_std`: ULPT shift step multiplier (the embedding std)."""
    if isinstance(prompt, BBTv2):
        return BBTv2Space(prompt)
    if isinstance(prompt, BBT):
        return BBTSpace(prompt)
    if isinstance(prompt, ULPT):
        return ULPTSpace(prompt, config.search_scale_shift, shift_std)
    raise ValueError(f"no black-box search space for {type(prompt).__name__}")


# --- creating the prompt: P₀ and projection stds from the model ----------------------------------------------------
def base_prompt(evaluator: PromptEvaluator, config: BlackBoxConfig, std_hat: float) -> tuple[torch.Tensor, list | None]:
    if config.init == "normal":
        return normal_base(config.seed, config.prompt_len, evaluator.hidden_size, std_hat), None
    vocab_prompt = getattr(evaluator, "vocab_prompt", None)
    if vocab_prompt is None:
        raise ValueError(f"{type(evaluator).__name__} cannot embed tokens for P₀; use init='normal' (--init normal)")
    return vocab_prompt(config.prompt_len, config.seed)


def create_prompt(evaluator: PromptEvaluator, config: BlackBoxConfig, train: Sequence[Example]) -> SoftPrompt:
    """A fresh prompt for `config.method`, calibrated on the model (BBTv2: one forward pass over `train`)."""
    hidden, std_hat = evaluator.hidden_size, evaluator.embedding_std()
    n, d, seed = config.prompt_len, config.dim, config.seed
    if config.method == "ulpt":
        scale_shift = config.search_scale_shift
        ulpt = ULPT(ULPTConfig(n, rank=config.rank, seed=seed, use_scale=scale_shift, use_shift=scale_shift), hidden)
        ulpt.initialize(None, seed)
        return ulpt
    base, ids = base_prompt(evaluator, config, std_hat)
    if config.method == "bbt":
        std = projection_std(std_hat, d, config.alpha, config.sigma)
        bbt_config = BBTConfig(n, dim=d, seed=seed, projection_std=std, init=config.init, base_token_ids=ids)
        prompt: SoftPrompt = BBT(bbt_config, hidden)
    else:
        # σ̂_0: word embeddings (as the authors); σ̂_l: clipped std of the hidden states entering layer l with P₀ in place
        layer_stds = [std_hat, *evaluator.hidden_state_stds(train, base)[1:]]
        stds = [projection_std(s, d, config.alpha, config.sigma) for s in layer_stds]
        v2_config = BBTv2Config(
            n, d, evaluator.num_layers, seed, projection_stds=stds, init=config.init, base_token_ids=ids
        )
        prompt = BBTv2(v2_config, hidden)
    with torch.no_grad():
        prompt.base.copy_(base)
    return prompt

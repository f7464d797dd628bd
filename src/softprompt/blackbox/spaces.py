"""Search spaces: how each black-box method turns CMA-ES search vectors into prompts, and how it starts.

The prompt module always holds the committed solution (what dev/test scoring and the artifact use); `candidates`
builds a whole population's prompts with one matmul, (P, dim) @ (dim, n·D).

* bbt:   x = z ∈ R^d;              prompt = P₀ + A·z
* bbtv2: x = z_l ∈ R^d, per layer; prompt = P₀, deep[l] = A_l·z_l, other layers at their committed value
* ulpt:  x = z (n·r) [+ scale, shift (D each)]; prompt = (z·A) ⊙ scale + shift
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from softprompt.models.inputs import PromptInputs
from softprompt.prompts import build_prompt
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt
from softprompt.prompts.bbt import BBT, BBTv2
from softprompt.prompts.ulpt import ULPT
from softprompt.tasks.base import Example


class Space:
    """The committed solution lives in the prompt module; `candidates` builds a population's prompts in one matmul."""

    num_es = 1

    def __init__(self, prompt: SoftPrompt) -> None:
        self.prompt = prompt

    def x0(self, es: int) -> np.ndarray:
        raise NotImplementedError

    def stds(self, es: int) -> np.ndarray | None:
        return None  # per-coordinate step-size multipliers (pycma's CMA_stds)

    def candidates(self, es: int, x: torch.Tensor) -> PromptInputs:
        """(P, dim) search vectors -> the P candidates' prompts, one row each."""
        raise NotImplementedError

    def commit(self, es: int, x: np.ndarray) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def current(self) -> PromptInputs:
        """The committed solution."""
        return self.prompt.materialize()


class BBTSpace(Space):
    prompt: BBT

    def x0(self, es: int) -> np.ndarray:
        return np.zeros(self.prompt.config.dim)

    @torch.no_grad()
    def candidates(self, es: int, x: torch.Tensor) -> PromptInputs:
        return PromptInputs(embeds=self.prompt.prompts(x))

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
    def candidates(self, es: int, x: torch.Tensor) -> PromptInputs:
        self._stale.discard(es)  # this layer is replaced by the candidates anyway
        self._refresh()
        weight = self.prompt.projection(es)
        self._weight = (es, weight)
        deep = self._deep.unsqueeze(1).repeat(1, len(x), 1, 1)
        deep[es] = self.prompt.layer_prompts(es, x, weight)
        return PromptInputs(embeds=self.prompt.base.expand(len(x), -1, -1), deep=deep)

    @torch.no_grad()
    def commit(self, es: int, x: np.ndarray) -> None:
        self.prompt.z[es].copy_(torch.from_numpy(x))
        if self._weight is not None and self._weight[0] == es:
            self._deep[es] = self.prompt.layer_prompts(es, self.prompt.z[es : es + 1], self._weight[1])[0]
        else:  # replaying: recompute lazily, once
            self._stale.add(es)
        self._weight = None

    @torch.no_grad()
    def current(self) -> PromptInputs:
        self._refresh()
        return PromptInputs(embeds=self.prompt.base.unsqueeze(0), deep=self._deep.unsqueeze(1).clone())


class ULPTSpace(Space):
    """x = [z (n·r)] or [z, scale (D), shift (D)]; p = (z·A) ⊙ scale + shift for the whole population at once.

    Scale and shift are searched when the ULPT config makes them learnable (use_scale and use_shift)."""

    prompt: ULPT

    def __init__(self, prompt: ULPT, shift_std: float) -> None:
        if prompt.config.tune != "z" or prompt.config.neutral_init:
            raise ValueError("black-box ULPT searches z from the authors' start; --tune projection and "
                             "--neutral-init are gradient-training variants (softprompt train)")  # fmt: skip
        super().__init__(prompt)
        self.scale_shift = prompt.config.use_scale and prompt.config.use_shift
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
    def candidates(self, es: int, x: torch.Tensor) -> PromptInputs:
        p, d = self.prompt, self.prompt.hidden_size
        prompts = p.projection(x[:, : self.nr].view(len(x), p.prompt_len, -1))
        if self.scale_shift:
            return PromptInputs(embeds=prompts * x[:, None, self.nr : self.nr + d] + x[:, None, self.nr + d :])
        return PromptInputs(embeds=prompts * p.scale + p.shift)

    @torch.no_grad()
    def commit(self, es: int, x: np.ndarray) -> None:
        x_t, p, d = torch.from_numpy(x).float(), self.prompt, self.prompt.hidden_size
        p.z.copy_(x_t[: self.nr].view_as(p.z))
        if self.scale_shift:
            p.scale.copy_(x_t[self.nr : self.nr + d])
            p.shift.copy_(x_t[self.nr + d :])


def make_space(prompt: SoftPrompt, shift_std: float = 0.0) -> Space:
    """The search space for a prompt module; `shift_std`: ULPT shift step multiplier (the embedding std)."""
    if isinstance(prompt, BBTv2):
        return BBTv2Space(prompt)
    if isinstance(prompt, BBT):
        return BBTSpace(prompt)
    if isinstance(prompt, ULPT):
        return ULPTSpace(prompt, shift_std)
    raise ValueError(f"no black-box search space for {type(prompt).__name__}")


def create_prompt(model: ModelAccess, config: PromptConfig, train: Sequence[Example], seed: int) -> SoftPrompt:
    """A fresh prompt for `config` (a copy: the caller's config is left as it was), initialised and calibrated on
    the model exactly as gradient training does."""
    fits = getattr(model, "check_prompt_fits", None)  # an in-process model; an endpoint checks for itself
    if fits is not None:
        fits(config.prompt_len)
    prompt = build_prompt(copy.deepcopy(config), model.hidden_size)
    prompt.initialize(model, seed)
    prompt.calibrate(model, train)
    return prompt

"""Deep prefix tuning (Li & Liang, 2021; P-tuning v2, Liu et al., 2022): learnable keys and values at every layer.

    layer l attends to [K_l ; K(x)] and [V_l ; V(x)],   K_l, V_l ∈ R^{H×m×d}   (m slots, H key/value heads, width d)

Direct (P-tuning v2): K, V are the parameters, 2·L·m·H·d numbers (grouped-query attention: H is the key/value head
count, so SmolLM2-135M with L=30, H=3, d=64 and m=20 has 230,400).
Reparametrised (`reparam`, Li & Liang's MLP for stable optimisation):
    [K; V] = MLP(E),  E ∈ R^{m×D},  MLP = Linear(D→h) → tanh → Linear(h→2·L·H·d)
trainable m·D + (D+1)·h + (h+1)·2·L·H·d. The MLP only shapes the optimisation: once trained, the K, V it produces
are all a model needs, so the artifact stores the folded K, V (`fold()`), the size of a direct prefix (SmolLM2,
m=20, h=512: 0.23M numbers instead of the MLP's 6.2M); training checkpoints keep E and the MLP so a resumed run
continues exactly. The stored config still says reparam=True: how the prefix was trained stays on record.

Initialisation ("auto"): the model's own keys and values of m sampled vocabulary tokens where the model can give
them without a text (decoders: Li & Liang's "real words" init), else seeded N(0, init_std²) (P-tuning v2's
nn.Embedding default is N(0, 1)). With `reparam`, E starts as m sampled vocabulary embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch
from torch import nn

from softprompt.models.dims import ModelDims
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt

PrefixInit = Literal["auto", "vocab", "normal"]
VOCAB_POOL = 5000  # sampled tokens come from the first ids, as for prompt tuning
MAX_PREFIX_NUMBERS = 1 << 28  # keys and values (and the reparametrisation MLP) this build will allocate


@dataclass
class PrefixConfig(PromptConfig):
    method: ClassVar[str] = "prefix"
    default_lr: ClassVar[float] = 1e-2  # P-tuning v2's range (5e-3 .. 1e-2) for a direct prefix
    prompt_len: int = 20  # m key/value slots per layer
    reparam: bool = False  # train through Li & Liang's MLP (folded away for the artifact)
    reparam_hidden: int = 512  # h, the MLP's hidden width
    init: PrefixInit = "auto"
    init_std: float = 1.0  # std of init="normal" (direct prefix)
    # the model's sizes; set when the prompt is built
    num_layers: int = field(default=1, metadata={"cli": False})
    num_kv_heads: int = field(default=1, metadata={"cli": False})
    head_dim: int = field(default=1, metadata={"cli": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("reparam_hidden", "num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.init not in ("auto", "vocab", "normal"):
            raise ValueError(f"prefix init must be 'auto', 'vocab' or 'normal', got {self.init!r}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")
        width = 2 * self.num_layers * self.num_kv_heads * self.head_dim
        if max(self.prompt_len, self.reparam_hidden if self.reparam else 0) * width > MAX_PREFIX_NUMBERS:
            raise ValueError(f"a prefix of {self.prompt_len} slots x {width} numbers is beyond this build's limit")

    def for_model(self, shape: ModelDims) -> PrefixConfig:
        """A copy sized for the model: its depth, key/value heads and head width (any object with those fields)."""
        return replace(self, num_layers=shape.num_layers, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim)

    def count_parameters(self, shape: ModelDims) -> int:
        """Trainable numbers on a model of `shape` (no weights needed): 2·L·m·H·d, or E and the MLP with reparam."""
        width = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim
        if not self.reparam:
            return self.prompt_len * width
        h = self.reparam_hidden
        return self.prompt_len * shape.hidden_size + (shape.hidden_size + 1) * h + (h + 1) * width

    def storage_note(self) -> str | None:
        if self.reparam:
            return ("folded: trained through the reparametrisation MLP (Li & Liang), the artifact stores only the "
                    "keys and values it produced")  # fmt: skip
        return None


class PrefixTuning(SoftPrompt):
    """Trainable: K and V (L×H×m×d each), or E and the MLP with `reparam` until `fold()`."""

    config: PrefixConfig

    def __init__(self, config: PrefixConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        c = config
        self.shape = (c.num_layers, c.num_kv_heads, c.prompt_len, c.head_dim)
        if c.reparam:
            width = 2 * c.num_layers * c.num_kv_heads * c.head_dim
            self.embedding = nn.Parameter(torch.zeros(c.prompt_len, hidden_size))
            self.mlp = nn.Sequential(nn.Linear(hidden_size, c.reparam_hidden), nn.Tanh(),
                                     nn.Linear(c.reparam_hidden, width))  # fmt: skip
        else:
            self._direct(torch.zeros(self.shape), torch.zeros(self.shape))

    def _direct(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys = nn.Parameter(keys)
        self.values = nn.Parameter(values)

    @property
    def is_reparametrised(self) -> bool:
        return hasattr(self, "mlp")

    def initialize(self, model: ModelAccess, seed: int) -> None:
        c = self.config
        if self.is_reparametrised:
            embeds, _ = model.vocab_embeddings(c.prompt_len, VOCAB_POOL, seed)
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.embedding.copy_(embeds)
                for layer in (self.mlp[0], self.mlp[2]):  # seeded, so runs repeat (nn.Linear's own init is global)
                    bound = layer.in_features**-0.5
                    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                    layer.bias.zero_()
            return
        keys = values = None
        if c.init != "normal":
            try:
                own = getattr(model, "key_value_prefix", None)
                if own is None:
                    raise ValueError("this model access gives no keys and values of tokens")
                prefix = own(model.vocab_embeddings(c.prompt_len, VOCAB_POOL, seed)[0])
                keys, values = prefix.prefix_keys[:, 0], prefix.prefix_values[:, 0]
            except ValueError as err:
                if c.init == "vocab":
                    raise ValueError(f"prefix init='vocab' needs a local decoder-only model: {err}") from err
            c.init = "normal" if keys is None else "vocab"  # what "auto" chose, on record
        if keys is None:
            generator = torch.Generator().manual_seed(seed)
            keys, values = (torch.randn(self.shape, generator=generator) * c.init_std for _ in range(2))
        if keys.shape != self.shape:
            raise ValueError(f"the model's keys have shape {tuple(keys.shape)}, the prefix {self.shape}")
        with torch.no_grad():
            self.keys.copy_(keys)
            self.values.copy_(values)

    def key_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, H, m, d) keys and values."""
        if not self.is_reparametrised:
            return self.keys, self.values
        c = self.config
        out = self.mlp(self.embedding).view(c.prompt_len, 2, c.num_layers, c.num_kv_heads, c.head_dim)
        out = out.permute(1, 2, 3, 0, 4)  # (2, L, H, m, d)
        return out[0], out[1]

    def materialize(self) -> PromptInputs:
        keys, values = self.key_values()
        return PromptInputs(prefix_keys=keys.unsqueeze(1), prefix_values=values.unsqueeze(1))

    def fold(self) -> PrefixTuning:
        """The prefix as an artifact stores it: the K, V the MLP produces (itself if there is no MLP)."""
        if not self.is_reparametrised:
            return self
        with torch.no_grad():
            keys, values = self.key_values()
        out = PrefixTuning(replace(self.config, reparam=False), self.hidden_size)
        out.config = self.config  # the record keeps reparam=True
        out._direct(keys.detach().clone(), values.detach().clone())
        return out

    def num_trainable_parameters(self) -> int:
        """As trained (E and the MLP with reparam), also for a folded prefix loaded from an artifact."""
        c = self.config
        return c.count_parameters(ModelDims(self.hidden_size, c.num_layers, c.num_kv_heads, c.head_dim))

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The training state (E and the MLP, from a checkpoint) or the folded K, V (from an artifact)."""
        if self.is_reparametrised and set(tensors) == {"keys", "values"}:
            del self.mlp, self.embedding
            self._direct(torch.zeros(self.shape), torch.zeros(self.shape))
        super().load_state_tensors(tensors)

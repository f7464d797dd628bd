"""Data parallel training over processes started by `accelerate launch` (or torchrun): g = (1/W) Σ_w g_w.

Every process holds the same prompt and optimiser, takes the same batch indices (they depend only on the step),
scores its own slice of B/W examples and the gradients are averaged (all-reduce) before the optimiser step. The
loss is a mean over examples, so the average of W equal slices' mean gradients is the gradient of the whole batch:
W processes × B/W examples take the same step as 1 process × B, up to float rounding. Process 0 alone evaluates,
logs and writes the run folder; the others only train in step with it.

    accelerate launch --multi_gpu --num_processes 2 -m softprompt train ...   # GPUs; on a CPU-only machine too
    torchrun --nproc_per_node 2 -m softprompt train ...                       # the same without accelerate

Accelerate's launcher starts torchrun's processes; without a GPU its `PartialState(cpu=True)` joins them over gloo.
`from_env` returns None in a plain (single) process, so nothing changes there. The process group is destroyed at
exit, while the interpreter is still whole: left to interpreter teardown, gloo's worker threads can abort the
process (SIGABRT, "terminate called without an active exception") after a run that had finished and written its
folder, so the launcher reports a failure.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class DataParallel:
    rank: int
    world: int
    device: torch.device

    @classmethod
    def from_env(cls, device: torch.device | None = None) -> DataParallel | None:
        """The process group this process was launched into, or None when it runs alone. `device` is the model's:
        a CPU model joins over gloo even on a GPU machine."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        try:
            from accelerate import PartialState
        except ImportError as err:
            raise ValueError("multi-process training needs accelerate: pip install accelerate") from err
        cpu = not torch.cuda.is_available() or (device is not None and device.type == "cpu")
        state = PartialState(cpu=cpu)
        atexit.unregister(_destroy_process_group)  # once per process, however many runs it trains
        atexit.register(_destroy_process_group)
        return cls(state.process_index, state.num_processes, state.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This process's equal slice of a micro-batch."""
        if len(indices) % self.world:
            raise ValueError(
                f"a micro-batch of {len(indices)} examples does not split evenly over {self.world} processes; make "
                "batch_size / grad_accum a multiple of the process count"
            )
        size = len(indices) // self.world
        return list(indices[self.rank * size : (self.rank + 1) * size])

    def average_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Average each gradient over the processes; it travels on the process group's device (NCCL needs CUDA
        tensors, and prompt parameters live on the CPU whatever device the model runs on)."""
        for p in params:
            if p.grad is not None:
                grad = p.grad.to(self.device)
                torch.distributed.all_reduce(grad)
                p.grad.copy_(grad / self.world)

    def average(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

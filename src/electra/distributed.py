"""Several processes under `torchrun`: the process group, rank information and the few collectives
the training loop needs. gloo on CPU, NCCL on GPUs. In a single process (no `torchrun`) the world
size is 1 and every helper is a no-op, so the loop reads the same either way.

The model knows nothing of this: `wrap` applies DistributedDataParallel from outside.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from electra.errors import UsageError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "auto") -> Dist:
    """Join the process group `torchrun` describes in the environment (RANK, WORLD_SIZE, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run a single process")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank)


def shutdown(d: Dist):
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def run_on_main(d: Dist, fn):
    """Run `fn` on rank 0 only; the other ranks wait, and get its result or its UsageError."""
    if not d.enabled:
        return fn()
    outcome = [None, None]
    if d.is_main:
        try:
            outcome[0] = fn()
        except UsageError as e:
            outcome[1] = str(e)
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise UsageError(outcome[1])
    return outcome[0]


def agree(d: Dist, elapsed: float, stop: bool, device) -> tuple[float, bool]:
    """Rank 0's clock and stop decision for everyone: the learning rate and the end of a
    time-budgeted run must not differ between ranks."""
    if not d.enabled:
        return elapsed, stop
    t = torch.tensor([elapsed, float(stop)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t[0]), bool(t[1])


def sum_over_ranks(d: Dist, values: list[int] | torch.Tensor, device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        dist.all_reduce(t)
    return t


def sum_dict_over_ranks(d: Dist, sums: dict[str, torch.Tensor | float], device) -> dict[str, float]:
    """Sum each entry over ranks (one collective); keys are the same on every rank."""
    keys = sorted(sums)
    t = sum_over_ranks(d, [float(sums[k]) for k in keys], device)
    return dict(zip(keys, t.tolist()))


def wrap(model: torch.nn.Module, d: Dist, device) -> torch.nn.Module:
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)


def no_sync(wrapped: torch.nn.Module, d: Dist, last_micro_step: bool):
    """Skip the gradient all-reduce on accumulation micro-steps; reduce once, on the last."""
    if d.enabled and not last_micro_step:
        return wrapped.no_sync()
    return contextlib.nullcontext()

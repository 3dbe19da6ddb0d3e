"""Where and how a process computes: the device, CPU threads and denormals, mixed precision, and
glibc's handling of freed memory. Training, fine-tuning and the benchmark share these.

`keep_freed_memory` changes the whole process's allocator, so only command-line entry points call
it (`electra pretrain`, `compare`, `bench`), never a library function.
"""

from __future__ import annotations

import contextlib

import torch

from electra.errors import UsageError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} was asked for but CUDA is not available; use --set train.device=cpu")
    return torch.device(name)


def set_cpu_threads(threads: int | None = None) -> None:
    """Flush denormals to zero, then set torch's intra-op threads (if given). Call it before the
    first parallel op, so that the worker threads inherit the setting: peaked attention in a trained
    model makes the CPU backward produce denormals, which took pre-training steps from 290 to 520 ms
    on `tiny` and a trained encoder's fine-tuning steps from 67-77 to 59-66 ms (docs/LOG.md)."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """glibc only, process-wide: serve every allocation from the heap and never trim it, so that a
    step's tensors reuse pages already mapped. Otherwise tensors above glibc's mmap threshold (the
    generator's B x N x V ones always: the ceiling is 32 MB) are mapped afresh and page-faulted on
    every step, ~15 ms each for 37 MB; freed memory stays with the process for the next step instead.
    Returns whether the setting took (False off glibc)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def keep_freed_memory_on_cpu(device: str) -> bool:
    """`keep_freed_memory` if `device` resolves to the CPU (where the step's tensors go through
    glibc's malloc)."""
    return resolve_device(device).type == "cpu" and keep_freed_memory()


def autocast_for(precision: str, device: torch.device):
    """(a context-manager factory, the precision it resolves to): bf16/fp16 autocast on CUDA,
    nothing for fp32 (the CPU default)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision

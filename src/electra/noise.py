"""Randomness keyed by (seed, position of the example in the data stream), not by batch.

Each example's masking choices, [MASK]-or-keep draws and sampling uniforms are a counter-based hash
of a 63-bit key derived from the run's seed and the example's global stream position, so a step's
noise does not depend on batching, gradient accumulation, the number of processes or the device,
and a resumed run draws exactly what an uninterrupted one would.

Shapes: B batch, T tokens, N predictions per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Noise:
    """Uniform(0,1) draws for one batch: which tokens to choose, [MASK] or keep, and one draw per
    prediction that picks the generator's sample (ELECTRA) or the random token (masked LM)."""

    select: torch.Tensor  # (B, T)
    keep: torch.Tensor  # (B, N)
    sample: torch.Tensor  # (B, N)
    swap: torch.Tensor | None = None  # (B, T): which words `objective.word_swap_prob` swaps
    donor: torch.Tensor | None = None  # (B, T): which word of its sequence each swapped word takes


def example_keys(seed: int, positions, purpose: int = 0) -> list[int]:
    """A 63-bit key per example from (seed, stream position, purpose): stable across batchings."""
    out = []
    for pos in positions:
        x = (int(seed) * 0x9E3779B97F4A7C15 + int(pos) * 0xBF58476D1CE4E5B9 + purpose * 0x94D049BB133111EB)
        x &= (1 << 64) - 1
        x ^= x >> 31
        x = (x * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
        x ^= x >> 32
        out.append(x & ((1 << 63) - 1))
    return out


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for 0 <= x < 2^32 in int64, in 16-bit halves so that nothing overflows."""
    return (((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a bijection on 32-bit integers with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_uniform(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(B, n) float32 uniforms in (0, 1), a counter-based hash of (key, stream, index): the same on
    every device and for any batching, and one vectorised computation for the whole batch (a
    torch.Generator per example took 56 ms of a 1.8 s `small` CPU step, and B small launches on a GPU)."""
    lo = _mix32((keys & _M32) ^ (0x9E3779B9 * (stream + 1) & _M32))[:, None]
    hi = _mix32((keys >> 32) ^ (0x85EBCA6B * (stream + 1) & _M32))[:, None]
    index = torch.arange(n, device=keys.device)[None, :]
    h = _mix32(_mix32(_mix32(index ^ lo) ^ hi) ^ lo)
    return ((h >> 8).float() + 0.5) * 2.0 ** -24  # 24 bits: exact in float32, never 0 or 1


def draw_noise(keys: list[int], seq_len: int, num_predictions: int, device, word_swaps: bool = False) -> Noise:
    """The noise of examples with these keys: it depends only on each example's key. `word_swaps`:
    also the draws of `objective.word_swap_prob` (streams of their own: the others do not change)."""
    k = torch.tensor(keys, dtype=torch.int64, device=device)
    swaps = (keyed_uniform(k, 3, seq_len), keyed_uniform(k, 4, seq_len)) if word_swaps else (None, None)
    return Noise(keyed_uniform(k, 0, seq_len), keyed_uniform(k, 1, num_predictions),
                 keyed_uniform(k, 2, num_predictions), *swaps)

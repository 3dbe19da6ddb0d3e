"""CPU fast paths the model dispatches to; on other devices each is the plain PyTorch op.

Dropout: torch's CPU `bernoulli_` draws one random number per element and took a third of a
`small` training step; `keep_mask` takes 16 bits per element from numpy's SFC64 instead, seeded
from torch's generator so that `torch.manual_seed` and checkpointed RNG state govern it as before.
`dropout_add` fuses the mask, its scale and the residual add into one pass, and `attention` keeps
SDPA except where SDPA's own CPU dropout (`bernoulli_` again) would run. docs/LOG.md and
BENCHMARKS.md have the measurements.

Shapes: B batch, H heads, T tokens, d head size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a faster mask on the CPU (`keep_mask`)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x, p).mul_(1.0 / (1.0 - p))  # autograd keeps only the mask for the backward


def dropout_add(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """residual + dropout(x); on the CPU the mask multiply, the 1 / (1 - p) scale and the add are one
    `addcmul` pass."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return residual + dropout(x, p, training)
    return torch.addcmul(residual, x, keep_mask(x, p), value=1.0 / (1.0 - p))


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A float 0/1 mask shaped like x, 0 where dropped (drop probability round(p * 2^16) / 2^16);
    the caller applies the 1 / (1 - p) scale. One draw from torch's generator seeds numpy's SFC64,
    whose 16-bit draws are 4x faster than torch's `random_`."""
    n = x.numel()
    seed = int(torch.randint(2 ** 62, ()))
    bits = torch.from_numpy(np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n])
    # The comparison written straight into a float mask: multiplying by a bool mask converts it
    # to float on every use, forward and backward, at 3x the cost.
    keep = torch.empty(x.shape, dtype=x.dtype)
    return torch.ge(bits.view(x.shape), round(p * 65536) - 32768, out=keep)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)


def attention(q, k, v, mask, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) with dropout p, times v: (B, H, T, d) -> (B, H, T, d).
    `mask`: None, a (B, 1, 1, T) bool key mask or a float bias broadcasting to (B, H, T, T).
    SDPA, except for dropout on the CPU, written out there so that it uses `dropout`."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)  # (B, H, T, T)
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    return torch.matmul(dropout(scores.softmax(-1), p, True), v)

"""The optimizer and learning-rate schedule of google-research/electra, shared by pre-training and
fine-tuning: AdamW without weight decay on biases and LayerNorm, linear warmup times linear decay.
"""

from __future__ import annotations

import torch


def lr_at(step: int, peak: float, warmup_steps: int, progress: float) -> float:
    """Official ELECTRA schedule: peak * min(1, (step+1)/warmup) * (1 - progress), where progress
    is the share of the run done (steps or wall-clock, whichever is further). The +1 spends no step
    at lr 0, which matters when optimizer steps are scarce."""
    return peak * min(1.0, (step + 1) / warmup_steps) * max(0.0, 1.0 - progress)


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over `cfg` (a TrainConfig); weight decay on matrices only (official: exclude
    LayerNorm and bias). With `word_lr_scale` != 1 the word embeddings are a group of their own,
    whose "lr_scale" the training loop applies to every step's lr."""
    from electra.model import Embeddings
    params = [p for p in model.parameters() if p.requires_grad]
    words = (set() if cfg.word_lr_scale == 1.0 else
             {id(m.word_embeddings.weight) for m in model.modules() if isinstance(m, Embeddings)})
    groups = [{"params": [p for p in params if p.ndim >= 2 and id(p) not in words], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if words:
        groups.append({"params": [p for p in params if id(p) in words], "weight_decay": cfg.weight_decay,
                       "lr_scale": cfg.word_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_eps, fused=True)

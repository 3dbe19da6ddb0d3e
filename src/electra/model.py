"""The Transformer encoder and the ELECTRA heads, written to mirror HF's `modeling_electra.py`.

Tensor for tensor the default layout equals HF's ElectraModel (word + position + token-type
embeddings, LayerNorm, `embeddings_project` when embedding_size != hidden_size, post-LN blocks with
separate q/k/v and a GELU feed-forward), ElectraGeneratorPredictions (dense -> GELU -> LayerNorm ->
decoder tied to the word embeddings, plus bias) and ElectraDiscriminatorPredictions (dense -> GELU
-> dense(1)), so export is a rename table. Two options deviate from HF, for small CPU models
(docs/LOG.md): pre-LN blocks with a final LayerNorm, and an ALiBi-style distance penalty on the
attention logits (Press et al. 2022).

Shapes: B batch, T tokens, N predicted positions per sequence, E embedding, D hidden, H heads,
V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from electra.config import ModelConfig
from electra.tokenizer import PAD_ID


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a faster mask on the CPU (`_keep_mask`)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * _keep_mask(x, p).mul_(1.0 / (1.0 - p))  # autograd keeps only the mask for the backward


def dropout_add(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """residual + dropout(x); on the CPU the mask multiply, the 1 / (1 - p) scale and the add are one
    `addcmul` pass."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return residual + dropout(x, p, training)
    return torch.addcmul(residual, x, _keep_mask(x, p), value=1.0 / (1.0 - p))


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A float 0/1 mask shaped like x, 0 where dropped; the caller applies the 1 / (1 - p) scale,
    where it can as `addcmul`'s value or a GEMM's alpha, at no pass of its own. 16 random bits per
    element (drop probability round(p * 2^16) / 2^16) from numpy's SFC64, seeded by one draw from
    torch's generator so that seeding and checkpointed RNG state govern it as before. torch's CPU
    bernoulli_ draws one number per element and took a third of a `small` training step; its
    random_ gives bits at a quarter of SFC64's speed (docs/LOG.md)."""
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


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (shared by both models)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=PAD_ID)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.embedding_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T]  # (B, T, E)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.output = nn.Linear(D, D)
        self.attention_dropout = cfg.attention_dropout

    def forward(self, x, mask):
        B, T, D = x.shape
        H = self.num_heads

        # q, k and v in one matrix multiply (one larger GEMM runs faster than three)
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        p = self.attention_dropout if self.training else 0.0
        if p > 0 and x.device.type == "cpu":  # SDPA's CPU dropout is bernoulli_, slow (see `dropout`)
            # the bias is added where the heads are split: no pass of its own
            y = self._written_out(F.linear(x, weight), bias, mask, p)
        else:
            qkv = F.linear(x, weight, bias)  # (B, T, 3D)
            q, k, v = qkv.view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, T, D/H)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).transpose(1, 2)
        return self.output(y.reshape(B, T, D))

    def _written_out(self, qkv, bias, mask, p):
        """Attention as batched GEMMs over (B*H, T, D/H), with our dropout, from the q|k|v GEMM's
        output without its bias (B, T, 3D); returns (B, T, H, D/H)."""
        B, T, _ = qkv.shape
        H = self.num_heads
        q, k, v = _SplitHeads.apply(qkv, bias, H)  # (B*H, T, D/H) each
        if mask is not None:  # added to the scores inside the batched GEMM
            if mask.dtype == torch.bool:  # (B, 1, 1, T) -> 0 / -inf
                mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
            rows = mask.shape[2]  # 1 for a key mask, T for a position bias
            mask = mask.expand(B, H, rows, T).reshape(B * H, rows, T)
        y = _Attention.apply(q, k, v, mask, p)  # (B*H, T, D/H)
        return y.view(B, H, T, -1).transpose(1, 2)


def _gemm(a, b, alpha):
    """a @ b * alpha over a batch, the scale applied by the GEMM itself (beta 0: no pass to read
    or fill the output)."""
    return torch.baddbmm(a.new_empty(()).expand(a.shape[0], a.shape[1], b.shape[2]), a, b,
                         beta=0.0, alpha=alpha)


class _Attention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + bias), dropout, times v, over (B*H, T, D/H), forward and backward
    as batched GEMMs that apply the 1 / sqrt(d) and 1 / (1 - p) scales themselves: autograd's
    backward of a scaled GEMM multiplies each input's gradient in a pass of its own."""

    @staticmethod
    def forward(ctx, q, k, v, bias, p):
        scale = q.shape[-1] ** -0.5
        if bias is None:
            scores = _gemm(q, k.transpose(1, 2), scale)
        else:
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
        probs = scores.softmax(-1)
        keep = _keep_mask(probs, p)  # 0/1
        dropped = probs * keep
        ctx.save_for_backward(q, k, v, probs, keep, dropped)
        ctx.scales = scale, 1.0 / (1.0 - p)
        return _gemm(dropped, v, ctx.scales[1])

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs, keep, dropped = ctx.saved_tensors
        scale, keep_scale = ctx.scales
        grad_v = _gemm(dropped.transpose(1, 2), grad, keep_scale)
        grad_probs = _gemm(grad, v.transpose(1, 2), keep_scale).mul_(keep)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q = _gemm(grad_scores, k, scale)
        grad_k = _gemm(grad_scores.transpose(1, 2), q, scale)
        return grad_q, grad_k, grad_v, None, None


class _SplitHeads(torch.autograd.Function):
    """(B, T, 3D) q|k|v without bias, (3D,) bias -> three contiguous (B*H, T, D/H) with the bias
    added, the layout batched GEMMs read: one pass, where a GEMM with bias first fills its output
    with the bias and the split then copies it. The backward writes the three gradients straight
    into one (B, T, 3D) tensor, where autograd's unbind + permute + reshape would copy them twice."""

    @staticmethod
    def forward(ctx, qkv, bias, num_heads):
        B, T, D3 = qkv.shape
        d = D3 // (3 * num_heads)
        ctx.shape = (B, T, num_heads, d)
        parts = qkv.new_empty(3, B, num_heads, T, d)
        torch.add(qkv.view(B, T, 3, num_heads, d).permute(2, 0, 3, 1, 4),
                  bias.view(3, 1, num_heads, 1, d), out=parts)
        return tuple(part.view(B * num_heads, T, d) for part in parts)

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        B, T, H, d = ctx.shape
        grad = grad_q.new_empty(B, T, 3, H, d)
        for i, g in enumerate((grad_q, grad_k, grad_v)):
            grad[:, :, i].copy_(g.view(B, H, T, d).transpose(1, 2))
        grad = grad.view(B * T, 3 * H * d)
        # the bias gradient from the contiguous result: a strided sum over each head took 3x as long
        return grad.view(B, T, -1), grad.sum(0), None


class Layer(nn.Module):
    """One Transformer block; post-LN as BERT/HF ELECTRA, or pre-LN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.pre_norm = cfg.norm_position == "pre"
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(D, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.hidden_dropout = cfg.dropout  # applied by `dropout_add`, fused with the residual

    def feed_forward(self, x):
        return self.output(F.gelu(self.intermediate(x)))

    def forward(self, x, mask):
        p, training = self.hidden_dropout, self.training
        if self.pre_norm:
            x = dropout_add(x, self.attention(self.attention_norm(x), mask), p, training)
            return dropout_add(x, self.feed_forward(self.ffn_norm(x)), p, training)
        x = self.attention_norm(dropout_add(x, self.attention(x, mask), p, training))
        return self.ffn_norm(dropout_add(x, self.feed_forward(x), p, training))


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head slopes 2^(-8h/max(H, 8)), h = 1..H. Press et al. 2022 use 2^(-8h/H); with the one
    or two heads of a tiny model that leaves almost no locality (slope 2^-8), so fewer than 8 heads
    keep the steep end of the 8-head sequence (1/2, 1/4, ...)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / max(num_heads, 8)) for h in range(num_heads)])


class Encoder(nn.Module):
    """HF's ElectraModel: embeddings (possibly shared), optional projection, the blocks."""

    def __init__(self, cfg: ModelConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.cfg = cfg
        self.embeddings = embeddings if embeddings is not None else Embeddings(cfg)
        self.embeddings_project = (nn.Linear(cfg.embedding_size, cfg.hidden_size)
                                   if cfg.embedding_size != cfg.hidden_size else None)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = (nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
                           if cfg.norm_position == "pre" else None)
        if cfg.attention_bias == "alibi":
            self.register_buffer("alibi", alibi_slopes(cfg.num_heads), persistent=False)

    def attention_mask(self, attention_mask, T, dtype, device):
        """None (attend everywhere), a (B,1,1,T) bool key mask, or a (B|1,H,T,T) float bias."""
        if attention_mask is not None and attention_mask.device.type == "cpu" and bool(attention_mask.all()):
            attention_mask = None  # nothing to mask (packed shards): skip the mask's pass over the scores
        key_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        if self.cfg.attention_bias != "alibi":
            return key_mask
        pos = torch.arange(T, device=device)
        distance = (pos[None, :] - pos[:, None]).abs().to(dtype)  # (T, T)
        bias = -self.alibi.to(dtype)[:, None, None] * distance  # (H, T, T)
        bias = bias[None]
        if key_mask is not None:
            bias = bias.masked_fill(~key_mask, float("-inf"))
        return bias

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # (B, T, D)
        mask = self.attention_mask(attention_mask, input_ids.shape[1], x.dtype, x.device)
        for layer in self.layers:
            x = layer(x, mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x  # (B, T, D)


class GeneratorHead(nn.Module):
    """HF's ElectraGeneratorPredictions + generator_lm_head; the decoder weight is the word embedding."""

    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.word_embeddings = word_embeddings  # tied, not a copy
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden):  # (..., D) -> (..., V)
        x = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(x, self.word_embeddings.weight, self.bias)


class DiscriminatorHead(nn.Module):
    """HF's ElectraDiscriminatorPredictions: dense -> GELU -> dense(1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.prediction = nn.Linear(cfg.hidden_size, 1)

    def forward(self, hidden):  # (B, T, D) -> (B, T) logits of "replaced"
        return self.prediction(F.gelu(self.dense(hidden))).squeeze(-1)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, embeddings: Embeddings):
        super().__init__()
        self.encoder = Encoder(cfg, embeddings)
        self.head = GeneratorHead(cfg, embeddings.word_embeddings)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, positions=None):
        """MLM logits, only at `positions` (B, N) when given: (B, N, V); else (B, T, V)."""
        hidden = self.encoder(input_ids, token_type_ids, attention_mask)
        if positions is not None:
            hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.head(hidden)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.encoder = Encoder(cfg, embeddings)
        self.head = DiscriminatorHead(cfg)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.head(self.encoder(input_ids, token_type_ids, attention_mask))  # (B, T)


def init_weights(module: nn.Module, std: float = 0.02):
    """HF `ElectraPreTrainedModel._init_weights`: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def logit(p: float) -> float:
    return math.log(p / (1 - p))

"""The Transformer encoder and the ELECTRA heads, written to mirror HF's `modeling_electra.py`.

Tensor for tensor the default layout equals HF's ElectraModel (word + position + token-type
embeddings, LayerNorm, `embeddings_project` when embedding_size != hidden_size, post-LN blocks with
separate q/k/v and a GELU feed-forward), ElectraGeneratorPredictions (dense -> GELU -> LayerNorm ->
decoder tied to the word embeddings, plus bias) and ElectraDiscriminatorPredictions (dense -> GELU
-> dense(1)), so export is a rename table. Two options deviate from HF, for small CPU models
(docs/LOG.md): pre-LN blocks with a final LayerNorm, and an ALiBi-style distance penalty on the
attention logits (Press et al. 2022). Dropout and attention go through kernels.py, which keeps
PyTorch's ops except where a measured CPU fast path replaces them.

Shapes: B batch, T tokens, N predicted positions per sequence, E embedding, D hidden, H heads,
V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from electra.config import ModelConfig
from electra.kernels import Dropout, attention, dropout_add
from electra.tokenizer import PAD_ID


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (shared by both models)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=PAD_ID)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.embedding_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def words(self, input_ids):
        return self.word_embeddings(input_ids)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.shape[1]
        x = self.words(input_ids) + self.position_embeddings.weight[:T]  # (B, T, E)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class DisentangledEmbeddings(Embeddings):
    """Gradient-disentangled embedding sharing (DeBERTa-V3, He et al. 2021, section 3.2): the
    discriminator's word vectors are the shared ones with no gradient into them, plus a delta of its
    own that starts at zero, so that the RTD loss no longer pulls the generator's embeddings its way.
    Position and token-type embeddings and the LayerNorm stay shared (the same modules)."""

    def __init__(self, shared: Embeddings, cfg: ModelConfig):
        nn.Module.__init__(self)
        self.word_embeddings, self.position_embeddings = shared.word_embeddings, shared.position_embeddings
        self.token_type_embeddings, self.norm, self.dropout = shared.token_type_embeddings, shared.norm, shared.dropout
        self.word_delta = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=PAD_ID)

    def words(self, input_ids):
        return self.word_embeddings(input_ids).detach() + self.word_delta(input_ids)


def fold_word_delta(state: dict, prefix: str = "") -> dict:
    """A state dict with `DisentangledEmbeddings`' delta added into the word embeddings (what the
    discriminator reads), as a plain `Embeddings` holds them: for export and fine-tuning."""
    delta = state.get(f"{prefix}embeddings.word_delta.weight")
    if delta is None:
        return state
    state = {k: v for k, v in state.items() if k != f"{prefix}embeddings.word_delta.weight"}
    key = f"{prefix}embeddings.word_embeddings.weight"
    state[key] = state[key].detach() + delta.detach()
    return state


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
        q, k, v = F.linear(x, weight, bias).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, T, D/H)
        y = attention(q, k, v, mask, self.attention_dropout if self.training else 0.0)
        return self.output(y.transpose(1, 2).reshape(B, T, D))


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


def alibi_slopes(num_heads: int, kind: str = "steep") -> torch.Tensor:
    """Per-head slopes. "standard" is Press et al. 2022's 2^(-8h/H), h = 1..H; with the one or two
    heads of a tiny model that leaves almost no locality (slope 2^-8), so "steep" (the default),
    2^(-8h/max(H, 8)), keeps the steep end of the 8-head sequence (1/2, 1/4, ...). "steep-global" is
    "steep" with the last head near-global (2^-8) when there are two or more: local heads for the
    generator's one head and for syntax, one head that sees the whole window (a word that does not fit
    its sentence's topic)."""
    spread = num_heads if kind == "standard" else max(num_heads, 8)
    slopes = [2.0 ** (-8.0 * (h + 1) / spread) for h in range(num_heads)]
    if kind == "steep-global" and num_heads > 1:
        slopes[-1] = 2.0 ** -8
    return torch.tensor(slopes)


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
            self.register_buffer("alibi", alibi_slopes(cfg.num_heads, cfg.alibi_slopes), persistent=False)

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


def init_positions(embeddings: Embeddings, cfg: ModelConfig):
    """With `position_init` "sinusoidal", the learned position embeddings start as Vaswani et al.'s
    sinusoids, scaled to the initializer's standard deviation (then trained like any weight)."""
    if cfg.position_init != "sinusoidal":
        return
    n, d = embeddings.position_embeddings.weight.shape
    position = torch.arange(n, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)[:, :d // 2]
    with torch.no_grad():
        embeddings.position_embeddings.weight.copy_(table / table.std() * cfg.initializer_range)


def logit(p: float) -> float:
    return math.log(p / (1 - p))

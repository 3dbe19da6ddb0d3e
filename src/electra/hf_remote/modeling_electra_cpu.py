"""ELECTRA as the `electra` package trains it for CPUs, for Hugging Face `transformers`.

`electra export` writes this file beside `config.json` when a run uses what HF's own ELECTRA cannot
represent: pre-LN blocks (a LayerNorm before attention and before the feed-forward, and one after
the last block) and an ALiBi-style attention bias (a per-head penalty linear in the distance,
slopes 2^(-8h/max(H, 8)), or Press et al.'s 2^(-8h/H)). Load it with `trust_remote_code=True`; it
needs nothing but torch and transformers, and no network. Tensor names are HF ELECTRA's (plus `electra.encoder.final_norm`),
so a post-LN run without the bias computes exactly what `ElectraModel` does.

Classes: `ElectraCpuModel` (AutoModel), `ElectraCpuForPreTraining` (the discriminator,
AutoModelForPreTraining), `ElectraCpuForMaskedLM` (the generator, AutoModelForMaskedLM),
`ElectraCpuForSequenceClassification` (a new classification head on the discriminator, as HF's
`ElectraForSequenceClassification`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, ModelOutput, SequenceClassifierOutput

_TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


class ElectraCpuConfig(PretrainedConfig):
    model_type = "electra_cpu"

    def __init__(self, vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                 num_attention_heads=4, intermediate_size=1024, hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, norm_position="pre", attention_bias="alibi",
                 alibi_slopes="steep", pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.initializer_range, self.layer_norm_eps = initializer_range, layer_norm_eps
        self.norm_position, self.attention_bias, self.alibi_slopes = norm_position, attention_bias, alibi_slopes


class _Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.embedding_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.embedding_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.embedding_size)
        self.LayerNorm = nn.LayerNorm(c.embedding_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T] + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c.hidden_size
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)


class _DenseNorm(nn.Module):
    """A projection and the LayerNorm HF's layout keeps beside it (attention.output, output)."""

    def __init__(self, d_in, c):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c)
        self.num_heads, self.dropout = c.num_attention_heads, c.attention_probs_dropout_prob

    def forward(self, x, bias):  # (B, T, D), (B|1, H|1, T|1, T) additive
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        return self.output.dense(y.transpose(1, 2).reshape(B, T, D))


class _Dense(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _Layer(nn.Module):
    """One block. The LayerNorms keep HF's names: attention.output.LayerNorm is the one around
    attention and output.LayerNorm the one around the feed-forward, before (pre-LN) or after."""

    def __init__(self, c):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Dense(c.hidden_size, c.intermediate_size)
        self.output = _DenseNorm(c.intermediate_size, c)
        self.pre_norm = c.norm_position == "pre"
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def feed_forward(self, x):
        return self.output.dense(F.gelu(self.intermediate.dense(x)))

    def forward(self, x, bias):
        attention_norm, ffn_norm = self.attention.output.LayerNorm, self.output.LayerNorm
        if self.pre_norm:
            x = x + self.dropout(self.attention(attention_norm(x), bias))
            return x + self.dropout(self.feed_forward(ffn_norm(x)))
        x = attention_norm(x + self.dropout(self.attention(x, bias)))
        return ffn_norm(x + self.dropout(self.feed_forward(x)))


class _Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))
        self.final_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps) if c.norm_position == "pre" else None


def alibi_slopes(num_heads: int, kind: str = "steep") -> torch.Tensor:
    """"steep": 2^(-8h/max(H, 8)); "standard": 2^(-8h/H), h = 1..H (Press et al. 2022);
    "steep-global": "steep" with the last of two or more heads at 2^-8."""
    spread = num_heads if kind == "standard" else max(num_heads, 8)
    slopes = [2.0 ** (-8.0 * (h + 1) / spread) for h in range(num_heads)]
    if kind == "steep-global" and num_heads > 1:
        slopes[-1] = 2.0 ** -8
    return torch.tensor(slopes)


class ElectraCpuPreTrainedModel(PreTrainedModel):
    config_class = ElectraCpuConfig
    base_model_prefix = "electra"

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()


class ElectraCpuModel(ElectraCpuPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = _Embeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = _Encoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def attention_bias(self, attention_mask, T, dtype, device):
        """None, or an additive (B|1, H|1, T|1, T) bias: -inf at padded keys, minus slope x distance."""
        bias = None
        if self.config.attention_bias == "alibi":
            pos = torch.arange(T, device=device)
            distance = (pos[None, :] - pos[:, None]).abs().to(dtype)
            # slopes computed here, not kept in a buffer: from_pretrained builds models without
            # running __init__'s tensor code, and a non-persistent buffer would stay unset
            slopes = alibi_slopes(self.config.num_attention_heads, getattr(self.config, "alibi_slopes", "steep"))
            slopes = slopes.to(device=device, dtype=dtype)
            bias = (-slopes[:, None, None] * distance)[None]  # (1, H, T, T)
        if attention_mask is not None and not bool(attention_mask.all()):
            keys = torch.zeros(attention_mask.shape, dtype=dtype, device=device).masked_fill(
                ~attention_mask.bool(), float("-inf"))[:, None, None, :]  # (B, 1, 1, T)
            bias = keys if bias is None else bias + keys
        return bias

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        bias = self.attention_bias(attention_mask, input_ids.shape[1], x.dtype, x.device)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        if self.encoder.final_norm is not None:
            x = self.encoder.final_norm(x)
        return BaseModelOutput(last_hidden_state=x)


@dataclass
class ElectraCpuForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class ElectraCpuForPreTraining(ElectraCpuPreTrainedModel):
    """The discriminator: per-token logits of "replaced"."""

    def __init__(self, config):
        super().__init__(config)
        self.electra = ElectraCpuModel(config)
        self.discriminator_predictions = nn.Module()
        self.discriminator_predictions.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.discriminator_predictions.dense_prediction = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        p = self.discriminator_predictions
        logits = p.dense_prediction(F.gelu(p.dense(hidden))).squeeze(-1)  # (B, T)
        loss = None
        if labels is not None:
            mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(labels, dtype=torch.bool)
            loss = F.binary_cross_entropy_with_logits(logits[mask], labels[mask].float())
        return ElectraCpuForPreTrainingOutput(loss=loss, logits=logits)


class ElectraCpuForMaskedLM(ElectraCpuPreTrainedModel):
    """The generator: vocabulary logits, its decoder tied to the word embeddings."""

    _tied_weights_keys = ({"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"} if _TRANSFORMERS_5
                          else ["generator_lm_head.weight"])

    def __init__(self, config):
        super().__init__(config)
        self.electra = ElectraCpuModel(config)
        self.generator_predictions = nn.Module()
        self.generator_predictions.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.generator_predictions.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.generator_lm_head

    def set_output_embeddings(self, value):
        self.generator_lm_head = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        p = self.generator_predictions
        logits = self.generator_lm_head(p.LayerNorm(F.gelu(p.dense(hidden))))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)


class ElectraCpuForSequenceClassification(ElectraCpuPreTrainedModel):
    """HF's ELECTRA classification head (dense, GELU, dense on [CLS], with dropout) on the encoder."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.electra = ElectraCpuModel(config)
        self.classifier = nn.Module()
        self.classifier.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state[:, 0]
        c = self.classifier
        logits = c.out_proj(self.dropout(F.gelu(c.dense(self.dropout(hidden)))))
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits.squeeze(-1), labels.float()) if self.num_labels == 1
                    else F.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)

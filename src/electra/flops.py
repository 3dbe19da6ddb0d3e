"""Model FLOPs of a pre-training step, per token: what a run spends, for comparing objectives at
equal compute and for utilisation figures.

Counted: every matrix multiply (2 FLOPs per multiply-add) of the encoders, attention scores and
their weighted sum included, the embedding projection, the heads, the generator's vocabulary head
only at the predicted positions (as it runs); backward = 2 x forward, so a training step is
3 x forward. Not counted: LayerNorm, softmax, GELU, embedding lookups (small next to the above).
"""

from __future__ import annotations

from electra.config import Config, ModelConfig, generator_config


def encoder_forward_flops(m: ModelConfig, seq_len: int) -> float:
    """Per token: projections, attention (QK^T and AV over seq_len keys), feed-forward, all layers."""
    D, F = m.hidden_size, m.intermediate_size
    per_layer = 2 * 4 * D * D + 2 * 2 * seq_len * D + 2 * 2 * D * F
    project = 2 * m.embedding_size * D if m.embedding_size != D else 0
    return m.num_layers * per_layer + project


def training_flops_per_token(cfg: Config) -> float:
    """FLOPs of one training step divided by its tokens (forward + backward)."""
    m, seq_len, V, E = cfg.model, cfg.data.seq_len, cfg.model.vocab_size, cfg.model.embedding_size
    predicted = cfg.objective.predictions_per_sequence(seq_len) / seq_len  # share of tokens with a head

    def vocabulary_head(hidden):  # at the predicted positions: projection to E, then to the vocabulary
        return predicted * (2 * hidden * E + 2 * E * V)

    if cfg.objective.kind == "mlm":
        return 3 * (encoder_forward_flops(m, seq_len) + vocabulary_head(m.hidden_size))
    g = generator_config(m, cfg.objective)
    generator = encoder_forward_flops(g, seq_len) + vocabulary_head(g.hidden_size)
    discriminator = encoder_forward_flops(m, seq_len) + 2 * m.hidden_size * m.hidden_size + 2 * m.hidden_size
    if cfg.objective.disc_mlm_weight > 0:  # the discriminator's own vocabulary head, at the same positions
        discriminator += vocabulary_head(m.hidden_size)
    return 3 * (generator + discriminator)

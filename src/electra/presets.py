"""Named configurations: the official ELECTRA sizes (paper Table 6, google-research/electra
`configure_pretraining.py`) and `tiny`, for a 2-core CPU. Each is a set of dotted overrides of the
defaults in config.py; `config.preset_config(name)` applies one. Why each value: the comments, and
docs/LOG.md for the measurements behind `tiny`.
"""

from __future__ import annotations

from typing import Any

_OFFICIAL = dict(lr=5e-4, warmup_steps=10_000)

PRESETS: dict[str, dict[str, Any]] = {
    # A CPU model: small vocabulary, pre-LN, local attention bias, a base-rate discriminator bias and
    # a generator 1/8 as wide (hidden 16): with 1/4 the discriminator of a 30-minute run learned no
    # context; with 1/8 it did. Fine-tuned, 1/4 led after 6e13 FLOPs and trailed after 2-4e14.
    # The discriminator also predicts the original token at the masked positions (disc_mlm_weight,
    # not in the paper): at equal FLOPs (6.6e13, 10 minutes) it detects far better (held-out AUC
    # 0.731 / 0.605 against 0.577 / 0.548 over two seeds) and fine-tunes better (SST-2-1k +2.8).
    # The word embeddings start as the corpus's PPMI-SVD vectors and stay fixed (word_init,
    # word_lr_scale 0; fine-tuning then keeps them fixed too): ten minutes cannot teach 8,192 word
    # vectors what seconds of counting give, and a fixed table keeps what fine-tuning on a small set
    # would pull apart. At 6.6e13 FLOPs: held-out AUC 0.81-0.83 against 0.61-0.73, SST-2-1k 4.8 points
    # above random weights where it was 6.5 below, full SST-2 above them too.
    # docs/LOG.md has the measurements.
    "tiny": {
        "model.hidden_size": 128, "model.num_layers": 4, "model.num_heads": 2,
        "model.intermediate_size": 512, "model.embedding_size": 128,
        "model.max_position_embeddings": 128, "model.dropout": 0.0, "model.attention_dropout": 0.0,
        "model.norm_position": "pre", "model.attention_bias": "alibi",
        "objective.generator_size": 0.125, "objective.disc_bias_init": "base_rate",
        "objective.disc_mlm_weight": 1.0, "model.word_init": "ppmi-svd", "train.word_lr_scale": 0.0,
        "data.vocab_size": 8192, "data.seq_len": 128,
        "train.batch_size": 32, "train.lr": 3e-3, "train.warmup_steps": 100,
        "train.max_steps": 100_000, "train.time_budget": "30m",
        "train.log_every": 20, "train.eval_every": 250, "train.checkpoint_every": 250,
    },
    # Official ELECTRA-Small: 12 layers, hidden 256, 4 heads, FFN 1024, embedding 128.
    "small": {"model.hidden_size": 256, "model.num_layers": 12, "model.num_heads": 4,
              "model.intermediate_size": 1024, "model.embedding_size": 128,
              "objective.generator_size": 0.25, "train.batch_size": 128,
              "train.max_steps": 1_000_000, **{f"train.{k}": v for k, v in _OFFICIAL.items()}},
    # Official ELECTRA-Base: generator 1/3 of the width, lr 2e-4, batch 256, 766k steps.
    "base": {"model.hidden_size": 768, "model.num_layers": 12, "model.num_heads": 12,
             "model.intermediate_size": 3072, "model.embedding_size": 768,
             "objective.generator_size": 1 / 3, "train.batch_size": 256, "train.lr": 2e-4,
             "train.warmup_steps": 10_000, "train.max_steps": 766_000},
    # Official ELECTRA-Large: mask_prob 0.25, batch 2048, 400k steps.
    "large": {"model.hidden_size": 1024, "model.num_layers": 24, "model.num_heads": 16,
              "model.intermediate_size": 4096, "model.embedding_size": 1024,
              "objective.generator_size": 0.25, "objective.mask_prob": 0.25,
              "train.batch_size": 2048, "train.lr": 2e-4, "train.warmup_steps": 10_000,
              "train.max_steps": 400_000},
}

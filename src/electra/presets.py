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
    # The word embeddings start as the corpus's PPMI-SVD vectors (word_init): ten minutes cannot teach
    # thousands of word vectors what seconds of counting give (at 6.6e13 FLOPs: held-out AUC 0.81-0.83
    # against 0.61-0.73, SST-2-1k above random weights where it was 6.5 below). They learn at 0.3
    # times the lr (word_lr_scale), and 5% of the words are swapped for a word drawn from the corpus
    # (word_swap_prob, word_swap_source): the generator's plausible replacements rarely teach the
    # discriminator to find a word that does not fit its context; these do. The vocabulary follows the
    # corpus's size (data.vocab_size 0: 8,192 pieces for the built-in books, 16,384 for IMDB). Against
    # the fixed vectors, no swaps and 8,192 pieces before them, at 4e14 FLOPs (60 minutes) on IMDB:
    # SST-2-1k 71.4 against 67.3, one replaced word found in 48% / 45% of WikiText-2 sentences against
    # 36% / 34% (replaced_top1), full SST-2 82.9 against 84.1.
    # docs/LOG.md has the measurements.
    "tiny": {
        "model.hidden_size": 128, "model.num_layers": 4, "model.num_heads": 2,
        "model.intermediate_size": 512, "model.embedding_size": 128,
        "model.max_position_embeddings": 128, "model.dropout": 0.0, "model.attention_dropout": 0.0,
        "model.norm_position": "pre", "model.attention_bias": "alibi",
        "objective.generator_size": 0.125, "objective.disc_bias_init": "base_rate",
        "objective.disc_mlm_weight": 1.0, "model.word_init": "ppmi-svd", "train.word_lr_scale": 0.3,
        "objective.word_swap_prob": 0.05, "objective.word_swap_source": "corpus",
        "data.vocab_size": 0, "data.seq_len": 128,
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

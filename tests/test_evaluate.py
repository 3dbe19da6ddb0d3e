"""The detection demo as a measurement: one word replaced per sentence, found or not."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from electra.config import ModelConfig
from electra.evaluate import replaced_word_top1
from electra.tokenizer import load_tokenizer, train_tokenizer


def test_replaced_word_top1_counts_sentences_where_the_replaced_word_scores_highest(tmp_path):
    corpus = tmp_path / "pets.txt"
    # nine sentences of "cat" and one of "dog": a replacement must be the other word
    corpus.write_text("cat cat cat cat cat cat\n" * 9 + "dog dog dog dog dog\n")
    train_tokenizer([corpus], tmp_path / "tok", vocab_size=60, show_progress=False)
    tok = load_tokenizer(tmp_path / "tok")
    dog = tok.token_to_id("dog")
    assert dog is not None and tok.encode("cat dog").tokens == ["[CLS]", "cat", "dog", "[SEP]"]

    def flags_dogs(ids, types, mask):  # a discriminator that calls every "dog" replaced
        return torch.where(ids == dog, 5.0, -5.0)

    loaded = SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(model=ModelConfig(max_position_embeddings=64)),
                             model=SimpleNamespace(discriminator=flags_dogs))
    result = replaced_word_top1(loaded, [corpus])
    # found in the nine cat sentences (the one dog among cats), missed in the dog sentence
    assert result["replaced_sentences"] == 10
    assert result["replaced_top1"] == 0.9
    assert abs(result["replaced_top1_chance"] - (9 / 6 + 1 / 5) / 10) < 1e-12

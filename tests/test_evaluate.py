"""The detection demo as a measurement: one word replaced per sentence, found or not."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from electra.config import ModelConfig, ObjectiveConfig
from electra.evaluate import replaced_word_top1
from electra.errors import UsageError
from electra.inference import detect
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


def _one_loud_piece(tmp_path):
    """A run whose discriminator gives "dog" +5 and "##s" -9: "dogs" (two pieces) scores 5 by its
    max and -2 by its mean, "cat" 0."""
    vocab_text = tmp_path / "pets.txt"
    vocab_text.write_text("cat cat cat cat cat cat\n" * 9 + "dog dog dog dog dog\n" + "cats dogs\n")
    train_tokenizer([vocab_text], tmp_path / "tok", vocab_size=60, show_progress=False)
    tok = load_tokenizer(tmp_path / "tok")
    dog, plural = tok.token_to_id("dog"), tok.token_to_id("##s")
    assert tok.encode("cat dogs").tokens == ["[CLS]", "cat", "dog", "##s", "[SEP]"]

    def discriminator(ids, types, mask):
        return torch.where(ids == dog, 5.0, torch.where(ids == plural, -9.0, 0.0))

    cfg = SimpleNamespace(model=ModelConfig(max_position_embeddings=64), objective=ObjectiveConfig())
    return SimpleNamespace(tokenizer=tok, cfg=cfg, model=SimpleNamespace(discriminator=discriminator))


def test_replaced_top1_mean_scores_a_word_by_the_mean_of_its_pieces(tmp_path):
    loaded = _one_loud_piece(tmp_path)
    corpus = tmp_path / "held_out.txt"  # a replacement is the other word: "dogs" among cats, "cat" among dogs
    corpus.write_text("cat cat cat cat cat\n" * 9 + "dogs dogs dogs dogs dogs\n")
    counts = np.full(loaded.tokenizer.get_vocab_size(), 100)
    counts[loaded.tokenizer.token_to_id("cat")] = 1  # the rarity baseline: the rare "cat" wins everywhere
    result = replaced_word_top1(loaded, [corpus], train_counts=counts)
    assert result["replaced_top1_rarity"] == 0.1
    assert replaced_word_top1(loaded, [corpus]).keys() == result.keys() - {"replaced_top1_rarity"}
    # by the max, "dogs" wins everywhere: found among cats, and outbids "cat" among dogs; by the mean,
    # "dogs" (-2) loses to every "cat" (0): missed among cats, found among dogs
    assert result["replaced_sentences"] == 10
    assert result["replaced_top1"] == 0.9
    assert result["replaced_top1_mean"] == 0.1
    assert abs(result["replaced_top1_chance"] - 0.2) < 1e-12


def test_detect_word_score_max_or_mean_of_the_pieces_logits(tmp_path):
    loaded = _one_loud_piece(tmp_path)
    by_max, = detect(loaded, ["cat cat dogs"], top_k=0)
    by_mean, = detect(loaded, ["cat cat dogs"], top_k=0, word_score="mean")
    assert by_max["words"] == by_mean["words"] == ["cat", "cat", "dogs"]
    assert by_max["token_probs"] == by_mean["token_probs"]
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert by_max["word_probs"] == pytest.approx([0.5, 0.5, sigmoid(5)])
    assert by_mean["word_probs"] == pytest.approx([0.5, 0.5, sigmoid(-2)])
    assert by_max["flagged"] == [True, True, True] and by_mean["flagged"] == [True, True, False]
    with pytest.raises(UsageError, match="--word-score"):
        detect(loaded, ["a cat"], word_score="min")

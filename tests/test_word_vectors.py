"""Count-based word vectors (`model.word_init = "ppmi-svd"`): the counts, the PPMI, and a run that starts from them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.sparse import csr_matrix

from electra.checkpoint import latest_checkpoint
from electra.config import apply_overrides, preset_config
from electra.corpus import builtin_corpus
from electra.data import prepare_corpus
from electra.errors import UsageError
from electra.finetune import FinetuneConfig, finetune, starting_point
from electra.tasks import GLUE, load_task
from electra.tokenizer import load_tokenizer, train_tokenizer
from electra.train import pretrain
from electra.word_vectors import cooccurrence, ppmi, ppmi_svd_vectors

from tests.conftest import make_sst2, tiny_config


def test_cooccurrence_weights_pairs_by_distance_and_stops_at_document_boundaries():
    tokens = np.array([1, 2, 3, 4, 5])
    documents = np.array([0, 0, 0, 1, 1])  # 1 2 3 | 4 5
    counts = cooccurrence(tokens, documents, vocab_size=6, window=2).toarray()
    expected = np.zeros((6, 6))
    for a, b, w in [(1, 2, 1.0), (2, 3, 1.0), (1, 3, 0.5), (4, 5, 1.0)]:
        expected[a, b] = expected[b, a] = w
    np.testing.assert_allclose(counts, expected)


def test_ppmi_matches_its_definition_on_a_dense_matrix():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(7, 7)).astype(float) * (rng.random((7, 7)) < 0.6)
    counts[3] = 0  # a word never seen: no row
    total = counts.sum()
    p_word = counts.sum(1) / total
    p_context = counts.sum(0) ** 0.75 / (counts.sum(0) ** 0.75).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        dense = np.log(counts / total) - np.log(p_word)[:, None] - np.log(p_context)[None, :]
    expected = np.where(np.isfinite(dense), np.maximum(dense, 0), 0)
    np.testing.assert_allclose(ppmi(csr_matrix(counts)).toarray(), expected, atol=1e-12)


@pytest.fixture(scope="module")
def books_data(tmp_path_factory):
    """The built-in public-domain books, tokenized and prepared (a few seconds)."""
    root = tmp_path_factory.mktemp("books")
    train_tokenizer([builtin_corpus()], root / "tok", vocab_size=2000, show_progress=False)
    prepare_corpus([builtin_corpus()], root / "tok", root / "data", show_progress=False)
    return root / "data"


def test_vectors_put_words_of_one_kind_together(books_data):
    vectors, seen = ppmi_svd_vectors(books_data, vocab_size=2000, dim=64)
    vocab = load_tokenizer(books_data).get_vocab()
    assert seen.sum() > 1500 and not seen[0]  # [PAD] never occurs
    assert torch.allclose(vectors[seen].norm(dim=1), torch.ones(int(seen.sum())), atol=1e-5)

    def rank(word, other):  # where `other` comes among `word`'s neighbours by cosine (0 = nearest)
        cos = vectors @ vectors[vocab[word]]
        cos[vocab[word]] = -2
        return int((cos > cos[vocab[other]]).sum())
    # pronouns sit near pronouns, numbers near numbers: a random token would rank ~1,000
    assert rank("he", "she") < 20
    assert rank("two", "three") < 20


def test_pretraining_starts_from_the_vectors_and_stays_reproducible(tmp_path, books_data):
    cfg = tiny_config(books_data, **{"model.word_init": "ppmi-svd", "train.max_steps": 2, "train.lr": 1e-9,
                                     "train.warmup_steps": 1})
    pretrain(cfg, tmp_path / "a", books_data, show_progress=False)
    pretrain(cfg, tmp_path / "b", books_data, show_progress=False)
    a, b = (load_file(str(latest_checkpoint(tmp_path / r) / "model.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    words = next(v for k, v in a.items() if k.endswith("word_embeddings.weight"))
    vectors, seen = ppmi_svd_vectors(books_data, *words.shape)
    # at lr 1e-9 two steps leave the start as it was: the corpus's vectors, rows of unit length
    torch.testing.assert_close(words[seen], vectors[seen], atol=1e-6, rtol=1e-4)
    assert words[0].abs().max() < 1e-6  # [PAD] starts at zero (the tied output layer moves it by ~lr)


def test_an_unknown_word_init_is_refused():
    with pytest.raises(UsageError, match="word_init"):
        apply_overrides(preset_config("tiny"), {"model.word_init": "glove"})


def test_word_lr_scale_zero_keeps_the_vectors_while_the_rest_trains(tmp_path, books_data):
    start = tiny_config(books_data, **{"model.word_init": "ppmi-svd", "train.max_steps": 1, "train.lr": 1e-9,
                                      "train.warmup_steps": 1})
    frozen = tiny_config(books_data, **{"model.word_init": "ppmi-svd", "train.max_steps": 4, "train.lr": 2e-3,
                                       "train.warmup_steps": 1, "train.word_lr_scale": 0.0})
    pretrain(start, tmp_path / "start", books_data, show_progress=False)
    pretrain(frozen, tmp_path / "frozen", books_data, show_progress=False)
    a, b = (load_file(str(latest_checkpoint(tmp_path / r) / "model.safetensors")) for r in ("start", "frozen"))
    key = next(k for k in a if k.endswith("word_embeddings.weight"))
    vectors, seen = ppmi_svd_vectors(books_data, *a[key].shape)
    assert torch.equal(b[key][seen], vectors[seen])
    assert sum(not torch.equal(a[k], b[k]) for k in a) > len(a) // 2  # everything else moved


def test_fine_tuning_keeps_fixed_word_vectors_fixed_unless_told_otherwise(tmp_path, books_data):
    cfg = tiny_config(books_data, **{"model.word_init": "ppmi-svd", "train.max_steps": 2, "train.word_lr_scale": 0.0})
    pretrain(cfg, tmp_path / "run", books_data, show_progress=False)
    shutil.copy(books_data / "tokenizer.json", tmp_path / "run")  # what `electra pretrain` does
    start = starting_point(str(tmp_path / "run"))
    assert start.fixed_word_vectors
    task = load_task(GLUE["sst2"], make_sst2(tmp_path / "sst2", copies=3))
    key = "encoder.embeddings.word_embeddings.weight"
    pretrained = start.encoder_state["embeddings.word_embeddings.weight"]
    for scale, kept in ((None, True), (1.0, False)):
        out = tmp_path / f"ft-{scale}"
        report = finetune(GLUE["sst2"], task, FinetuneConfig(lr=1e-2, epochs=2, batch_size=8, embedding_lr_scale=scale),
                          start, out, seeds=(1,), show_progress=False)
        assert report["config"]["embedding_lr_scale"] == (0.0 if kept else 1.0)
        assert torch.equal(load_file(str(out / "best" / "model.safetensors"))[key], pretrained) == kept

"""Count-based word vectors for the start of pre-training (`model.word_init = "ppmi-svd"`).

At CPU budgets most of the vocabulary is seen a few hundred times in a run, and the shared word
embedding (half of `tiny`'s weights) is still near its random start when the run ends. The corpus's
co-occurrence statistics give every token a distributional vector in seconds: positive pointwise
mutual information over a +-`window` context (weighted 1/distance, context counts smoothed to the
power 0.75), factored by a truncated SVD, rows U * sqrt(S) (Levy, Goldberg & Dagan 2015, "Improving
distributional similarity with lessons learned from word embeddings"). Pre-training then starts
from these vectors instead of N(0, 0.02).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix, csr_matrix
from sklearn.utils.extmath import randomized_svd

from electra.data import PretrainingData


def corpus_tokens(data_dir, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `max_tokens` of the training split from the first shards, with each token's document
    number (so that no context window crosses a document boundary)."""
    tokens, documents, offset = [], [], 0
    for shard_tokens, _, starts in PretrainingData(data_dir, "train").shards:
        if offset >= max_tokens:
            break
        n = min(len(shard_tokens), max_tokens - offset)
        tokens.append(shard_tokens[:n])
        documents.append(np.searchsorted(starts, np.arange(n), side="right") + len(documents) * 2**40)
        offset += n
    return np.concatenate(tokens).astype(np.int64), np.concatenate(documents)


def cooccurrence(tokens: np.ndarray, documents: np.ndarray, vocab_size: int, window: int) -> csr_matrix:
    """Symmetric co-occurrence counts within `window` tokens, each pair weighted 1/distance."""
    counts = csr_matrix((vocab_size, vocab_size))
    for d in range(1, window + 1):
        same = documents[:-d] == documents[d:]
        left, right = tokens[:-d][same], tokens[d:][same]
        counts = counts + coo_matrix((np.full(len(left), 1.0 / d), (left, right)), shape=counts.shape).tocsr()
    return (counts + counts.T).tocsr()


def ppmi(counts: csr_matrix, context_power: float = 0.75) -> csr_matrix:
    """max(0, log p(w, c) / (p(w) p_a(c))), p_a the context distribution raised to `context_power`."""
    counts = counts.tocoo()
    total = counts.sum()
    word = np.asarray(counts.sum(axis=1)).ravel() / total
    context = np.asarray(counts.sum(axis=0)).ravel() ** context_power
    context /= context.sum()
    pmi = np.log(counts.data / total) - np.log(word[counts.row]) - np.log(context[counts.col])
    keep = pmi > 0
    return coo_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape).tocsr()


def ppmi_svd_vectors(data_dir, vocab_size: int, dim: int, window: int = 5, max_tokens: int = 20_000_000,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(vectors (vocab_size, dim) with unit rows, seen (vocab_size,) bool): tokens that never occur
    in the first `max_tokens` (special tokens among them) have no vector and are left to the caller."""
    tokens, documents = corpus_tokens(data_dir, max_tokens)
    matrix = ppmi(cooccurrence(tokens, documents, vocab_size, window))
    rank = min(dim, vocab_size - 1)  # a vocabulary narrower than the embedding leaves columns at zero
    u, s, _ = randomized_svd(matrix, n_components=rank, n_iter=4, random_state=seed)
    seen = np.diff(matrix.indptr) > 0  # a row of PPMI: the token occurs, with some positive association
    vectors = np.zeros((vocab_size, dim))
    vectors[:, :rank] = u * np.sqrt(s)
    vectors[seen] /= np.linalg.norm(vectors[seen], axis=1, keepdims=True)
    vectors[~seen] = 0
    return torch.from_numpy(vectors.astype(np.float32)), torch.from_numpy(seen)


@torch.no_grad()
def init_word_vectors(model: torch.nn.Module, data_dir, seed: int) -> int:
    """Copy the corpus's PPMI-SVD vectors into `model`'s word embedding, rows of unit length; tokens
    without a vector keep their random row. Returns the number of tokens given a vector.

    Unit rows, not N(0, 0.02)'s length (0.23 at width 128): the input side does not care (a
    LayerNorm follows), but the generator's output layer is tied to these rows, and at 0.23 its
    logits span too little to predict anything until its LayerNorm gains have grown several-fold;
    with the vectors kept fixed (`train.word_lr_scale=0`) its accuracy at [MASK] was 0.048 at step
    400 (0.079 with trained random rows; docs/LOG.md)."""
    from electra.model import Embeddings
    # one table: the generator and the discriminator share it ("shared" and "gdes" alike)
    (table,) = {id(m.word_embeddings): m.word_embeddings for m in model.modules() if isinstance(m, Embeddings)}.values()
    vectors, seen = ppmi_svd_vectors(data_dir, *table.weight.shape, seed=seed)
    table.weight[seen] = vectors[seen].to(table.weight.dtype)  # [PAD] never occurs: its row stays zero
    return int(seen.sum())

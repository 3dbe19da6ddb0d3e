"""Text -> token shards on disk -> fixed-length pre-training examples.

`prepare_corpus` streams documents through the tokenizer (whose Rust core encodes batches on all
cores) into flat token shards (`np.memmap`-able, uint16 when the vocabulary fits) with sentence and
document start offsets, a JSON index and the training split's token counts (the rarity baseline).
A fixed slice of documents (every k-th) is held out for validation.

`PretrainingData` cuts a split into consecutive windows and builds `[CLS] A [SEP] B [SEP]` examples
as the official `ExampleBuilder` does: A/B split at a sentence boundary (at a document boundary
when the window holds one, so segments do not mix documents), 10% single-segment examples. Windows
are packed from consecutive text, so padding appears only at the end of a shard.
"""

from __future__ import annotations

import array
import collections
import functools
import json
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from electra.atomic import building_dir, require_empty_dir
from electra.config import DataConfig
from electra.corpus import ReadStats, batched, check_corpus_files, corpus_bytes, read_documents
from electra.errors import UsageError
from electra.tokenizer import CLS_ID, PAD_ID, SEP_ID, load_tokenizer, save_tokenizer

INDEX_FILE = "index.json"
COUNTS_FILE = "token_counts.npy"
FORMAT_VERSION = 1
SHARD_TOKENS = 1 << 27  # 256 MB of uint16 per shard keeps files manageable
DOCS_PER_BATCH = 2048


class _ShardWriter:
    """Appends tokenized documents to one split's shards, rolling over at SHARD_TOKENS."""

    def __init__(self, out_dir: Path, split: str, dtype):
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shards: list[dict] = []
        self.tokens = 0
        self._file = None

    def _open(self):
        name = f"{self.split}-{len(self.shards):05d}"
        self._file = open(self.out_dir / f"{name}.tokens", "wb")
        self._current = {"name": name, "tokens": 0, "documents": 0, "sentences": 0}
        self._sentence_starts = array.array("q")  # 8 bytes an entry: memory stays small per shard
        self._doc_starts = array.array("q")

    def add_document(self, sentences: list[list[int]]):
        if self._file is None or self._current["tokens"] >= SHARD_TOKENS:
            self._close()
            self._open()
        pos = self._current["tokens"]
        self._doc_starts.append(pos)
        for ids in sentences:
            self._sentence_starts.append(pos)
            pos += len(ids)
        self._file.write(np.concatenate([np.asarray(s, dtype=self.dtype) for s in sentences]).tobytes())
        n = pos - self._current["tokens"]
        self._current["tokens"] = pos
        self._current["documents"] += 1
        self._current["sentences"] += len(sentences)
        self.tokens += n

    def _close(self):
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._current["name"]
        np.save(self.out_dir / f"{name}.sentences.npy", np.frombuffer(self._sentence_starts, np.int64))
        np.save(self.out_dir / f"{name}.documents.npy", np.frombuffer(self._doc_starts, np.int64))
        self.shards.append(self._current)
        self._file = None

    def finish(self) -> dict:
        self._close()
        return {"tokens": self.tokens, "shards": self.shards}


def prepare_corpus(corpus, tokenizer_dir, out_dir, doc_sep: str = DataConfig.doc_sep,
                   val_fraction: float = DataConfig.val_fraction, val_max_tokens: int = DataConfig.val_max_tokens,
                   show_progress: bool = True, workers: int = 1) -> dict:
    """Tokenize `corpus` into `out_dir` (built in a temporary folder, renamed when complete).
    Memory stays flat in corpus size: documents stream through in batches, shards are appended to
    on disk. `workers` > 1 tokenizes batches in that many processes (in order)."""
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    files = check_corpus_files(corpus)
    tok = load_tokenizer(tokenizer_dir)
    out = require_empty_dir(out_dir, "choose a new --out or remove it")
    vocab_size = tok.get_vocab_size()
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    val_period = round(1 / val_fraction) if val_fraction > 0 else 0
    with building_dir(out) as tmp:
        stats = ReadStats()
        writers = {"train": _ShardWriter(tmp, "train", dtype), "val": _ShardWriter(tmp, "val", dtype)}
        counts = np.zeros(vocab_size, np.int64)
        total_bytes = corpus_bytes(files)
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare",
                   disable=not show_progress, smoothing=0.1)
        doc_index, tokens, started = 0, 0, time.monotonic()
        batches = batched(read_documents(files, doc_sep, stats), DOCS_PER_BATCH)
        for batch, encoded in _encode_batches(batches, tok, workers):
            k, train_ids = 0, []
            tokens += sum(len(ids) for ids in encoded)
            for doc in batch:
                sentences = [ids for ids in encoded[k:k + len(doc)] if len(ids)]
                k += len(doc)
                if not sentences:
                    continue
                to_val = (val_period and doc_index % val_period == 0
                          and writers["val"].tokens < val_max_tokens)
                writers["val" if to_val else "train"].add_document(sentences)
                if not to_val:
                    train_ids.extend(sentences)
                doc_index += 1
            if train_ids:
                flat_ids = np.concatenate([np.asarray(s, np.int64) for s in train_ids])
                counts += np.bincount(flat_ids, minlength=vocab_size)
            bar.update(stats.bytes - bar.n)
            bar.set_postfix_str(f"{tokens / max(time.monotonic() - started, 1e-9):,.0f} tokens/s", refresh=False)
        bar.close()
        splits = {name: w.finish() for name, w in writers.items()}
        if splits["train"]["tokens"] == 0:
            if stats.documents == 0:
                raise UsageError("the corpus has no usable text (only empty lines); give files with text")
            raise UsageError("the corpus is too small: every document went to the validation split; "
                             "give more text or set --val-fraction 0")
        np.save(tmp / COUNTS_FILE, counts)
        save_tokenizer(tok, tmp)
        index = {"format": FORMAT_VERSION, "dtype": np.dtype(dtype).name, "vocab_size": vocab_size,
                 "doc_sep": doc_sep, "corpus": [str(f) for f in files], "read": asdict(stats),
                 "splits": splits}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return index


def _encode_batches(batches, tok, workers: int):
    """(batch of documents, token ids per sentence) in order; with workers > 1, a bounded number of
    batches is in flight in worker processes, so memory stays flat."""
    if workers <= 1:
        for batch in batches:
            encoded = tok.encode_batch([s for doc in batch for s in doc], add_special_tokens=False)
            yield batch, [e.ids for e in encoded]
        return
    context = multiprocessing.get_context("spawn")  # no fork of the tokenizer's thread pool
    with context.Pool(workers, initializer=_worker_init, initargs=(tok.to_str(),)) as pool:
        in_flight = collections.deque()
        for batch in batches:
            in_flight.append((batch, pool.apply_async(_worker_encode, ([s for doc in batch for s in doc],))))
            if len(in_flight) >= 2 * workers:
                done, result = in_flight.popleft()
                yield done, _unflatten(*result.get())
        while in_flight:
            done, result = in_flight.popleft()
            yield done, _unflatten(*result.get())


_worker_tokenizer = None


def _worker_init(tokenizer_json: str):
    global _worker_tokenizer
    os.environ["RAYON_NUM_THREADS"] = "1"  # the processes are the parallelism
    from tokenizers import Tokenizer

    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)


def _worker_encode(sentences: list[str]):
    encoded = _worker_tokenizer.encode_batch(sentences, add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in encoded], np.int64)
    flat = np.fromiter((i for e in encoded for i in e.ids), np.int32, count=int(lengths.sum()))
    return flat, lengths


def _unflatten(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def load_index(data_dir) -> dict:
    d = Path(data_dir)
    path = d / INDEX_FILE
    if not path.is_file():
        raise UsageError(f"{str(d)!r} is not a prepared data directory (no {INDEX_FILE}); "
                         "make one with `electra prepare`")
    try:
        index = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{str(path)!r} is not valid JSON ({e}); prepare the data again")
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        raise UsageError(f"{str(d)!r} was prepared by an incompatible version; prepare it again")
    return index


class PretrainingData:
    """Fixed-length examples from one split, addressable by an integer index (no state)."""

    def __init__(self, data_dir, split: str = "train", seq_len: int = 128,
                 single_segment_prob: float = 0.1, seed: int = 0):
        self.dir = Path(data_dir)
        self.index = load_index(self.dir)
        if split not in self.index["splits"]:
            raise UsageError(f"{str(self.dir)!r} has no {split!r} split")
        self.seq_len, self.single_segment_prob, self.seed = seq_len, single_segment_prob, seed
        self.stride = seq_len - 3  # content tokens of a two-segment example
        dtype = np.dtype(self.index["dtype"])
        self.shards = []
        for shard in self.index["splits"][split]["shards"]:
            n = shard["tokens"]
            tokens = np.memmap(self.dir / f"{shard['name']}.tokens", dtype=dtype, mode="r", shape=(n,))
            sentences = np.load(self.dir / f"{shard['name']}.sentences.npy", allow_pickle=False)
            documents = np.load(self.dir / f"{shard['name']}.documents.npy", allow_pickle=False)
            self.shards.append((tokens, sentences, documents))
        windows = [-(-len(t) // self.stride) for t, _, _ in self.shards]
        self._first = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return self.index["vocab_size"]

    def __len__(self) -> int:
        return int(self._first[-1])

    def example(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, token_type_ids), both int64 of length seq_len, 0-padded."""
        shard = int(np.searchsorted(self._first, idx, side="right") - 1)
        tokens, sentence_starts, doc_starts = self.shards[shard]
        start = (idx - int(self._first[shard])) * self.stride
        rng = np.random.default_rng([self.seed, idx])
        single = rng.random() < self.single_segment_prob
        content = np.asarray(tokens[start:start + self.stride + (1 if single else 0)], np.int64)
        ids = np.full(self.seq_len, PAD_ID, np.int64)
        types = np.zeros(self.seq_len, np.int64)
        if single or len(content) < 2:
            n = len(content)
            ids[0], ids[1:n + 1], ids[n + 1] = CLS_ID, content, SEP_ID
            return ids, types
        split = self._split_point(content, start, sentence_starts, doc_starts, rng)
        a, b = content[:split], content[split:]
        ids[0], ids[1:split + 1], ids[split + 1] = CLS_ID, a, SEP_ID
        end = split + 2 + len(b)
        ids[split + 2:end], ids[end] = b, SEP_ID
        types[split + 2:end + 1] = 1
        return ids, types

    @staticmethod
    def _split_point(content, start, sentence_starts, doc_starts, rng) -> int:
        """Where segment B begins: a document start near the middle, else a sentence start near a
        random target in the middle half, else the target itself (one long sentence)."""
        n = len(content)

        def inside(starts):
            lo, hi = np.searchsorted(starts, [start + 1, start + n])
            return starts[lo:hi] - start

        docs = inside(doc_starts)
        if len(docs):
            return int(docs[np.argmin(np.abs(docs - n / 2))])
        target = int(rng.integers(max(1, n // 4), max(2, 3 * n // 4 + 1)))
        sents = inside(sentence_starts)
        if len(sents):
            return int(sents[np.argmin(np.abs(sents - target))])
        return target

    def batch(self, indices) -> dict[str, torch.Tensor]:
        ids, types = zip(*(self.example(int(i)) for i in indices))
        input_ids = torch.from_numpy(np.stack(ids))
        return {"input_ids": input_ids, "token_type_ids": torch.from_numpy(np.stack(types)),
                "attention_mask": input_ids != PAD_ID}


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 1]).permutation(n)


def stream_indices(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Example indices at positions [start, start+count) of the endless shuffled stream."""
    out = np.empty(count, np.int64)
    pos, filled = start, 0
    while filled < count:
        epoch, offset = divmod(pos, n)
        order = epoch_order(n, seed, epoch)
        take = min(count - filled, n - offset)
        out[filled:filled + take] = order[offset:offset + take]
        filled, pos = filled + take, pos + take
    return out


def pad_batch(id_lists, type_lists, device="cpu"):
    """(ids, token types, attention mask) tensors of encoded texts, right-padded with [PAD] to the
    longest of them."""
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), PAD_ID, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, (x, y) in enumerate(zip(id_lists, type_lists)):
        ids[i, :len(x)], types[i, :len(y)] = torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)
    return ids.to(device), types.to(device), (ids != PAD_ID).to(device)

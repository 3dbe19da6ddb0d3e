"""Train, save and load the BPE tokenizer (Hugging Face `tokenizers`), with fixed special-token ids.

The tokenizer splits on white space and punctuation (as BERT does), then applies BPE with a `##`
continuing-word prefix, so sub-word pieces merge back into words for display (`detect`). It is saved
as a standard `tokenizer.json`, with `[CLS] A [SEP] B [SEP]` templates, loadable by
`PreTrainedTokenizerFast` without code of ours.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
from collections import Counter
from operator import itemgetter
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm import tqdm

from electra.config import DataConfig
from electra.corpus import ReadStats, batched, check_corpus_files, corpus_bytes, read_documents
from electra.errors import UsageError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_FILE = "tokenizer.json"
SUBWORD_PREFIX = "##"
# `vocab_size = 0`: the vocabulary by the corpus's size, (corpus words at least, pieces), first match.
# Measured for `tiny` (docs/LOG.md, thirteenth round): 8,192 pieces did better on the built-in corpus
# (1.3 M words as the pre-tokenizer counts them), 16,384 on IMDB (14 M).
AUTO_VOCAB_SIZES = ((4_000_000, 16_384), (0, 8_192))


def auto_vocab_size(words: int) -> int:
    """The vocabulary `vocab_size = 0` chooses for a corpus of `words` words (pre-tokenized)."""
    return next(pieces for least, pieces in AUTO_VOCAB_SIZES if words >= least)


def build_tokenizer(lowercase: bool = True, normalization: str = "nfkc") -> Tokenizer:
    """An untrained tokenizer with our normalizer, pre-tokenizer, templates and decoder."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX))
    steps = []
    if normalization != "none":
        steps.append(getattr(normalizers, normalization.upper())())
    if lowercase:
        steps.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = bert_template()
    tok.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX)
    return tok


def bert_template() -> processors.TemplateProcessing:
    """`[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` (segment ids 0 / 1), as BERT and ELECTRA."""
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )


def train_tokenizer(corpus, out_dir, vocab_size: int = DataConfig.vocab_size, lowercase: bool = DataConfig.lowercase,
                    normalization: str = DataConfig.normalization, doc_sep: str = DataConfig.doc_sep,
                    show_progress: bool = True, workers: int = 2) -> ReadStats:
    """Train BPE on the corpus files (streamed) and write `out_dir/tokenizer.json` atomically. The
    same corpus and settings give the same file, byte for byte (`train_bpe`), with any `workers`
    (processes counting words). `vocab_size` 0: `auto_vocab_size` of the words counted (`stats.words`)."""
    files = check_corpus_files(corpus)
    if 0 < vocab_size < len(SPECIAL_TOKENS) + 32:
        raise UsageError(f"--vocab-size {vocab_size} is too small; use at least {len(SPECIAL_TOKENS) + 32} "
                         "(or 0: by the corpus's size)")
    if vocab_size > 2**31 - 1:
        raise UsageError(f"--vocab-size {vocab_size} is too large")
    tok = build_tokenizer(lowercase, normalization)
    stats = ReadStats()
    bar = tqdm(total=corpus_bytes(files), unit="B", unit_scale=True, desc="count words",
               disable=not show_progress, delay=1)  # shown once it takes a second
    counts = count_words((" ".join(sentences) for sentences in read_documents(files, doc_sep, stats)), tok,
                         workers, lambda: bar.update(stats.bytes - bar.n))
    bar.close()
    if stats.documents == 0:
        raise UsageError("the corpus has no usable text (only empty lines); give files with text")
    stats.words = sum(counts.values())
    tok.model = train_bpe(counts, vocab_size or auto_vocab_size(stats.words), show_progress=show_progress)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    for i, token in enumerate(SPECIAL_TOKENS):  # the trainer puts them first; make sure
        assert tok.token_to_id(token) == i, (token, tok.token_to_id(token))
    save_tokenizer(tok, out_dir)
    return stats


def count_words(docs, tok: Tokenizer, workers: int = 1, progress=None) -> Counter:
    """How often each word occurs, after `tok`'s normalizer and pre-tokenizer: the words the BPE
    trainer learns from. `workers` > 1 counts batches of documents in that many processes (the
    counts are sums, so they do not depend on how the documents are split)."""
    batches = batched(docs, DOCS_PER_COUNT)
    counts: Counter = Counter()
    if workers <= 1:
        for batch in batches:
            counts.update(_count(tok, batch))
            progress and progress()
        return counts
    context = multiprocessing.get_context("spawn")  # no fork of the tokenizer's thread pool
    with context.Pool(workers, initializer=_count_init, initargs=(tok.to_str(),)) as pool:
        in_flight = collections.deque()
        for batch in batches:  # a bounded number of batches in flight: memory stays flat
            in_flight.append(pool.apply_async(_count_in_worker, (batch,)))
            if len(in_flight) >= 2 * workers:
                counts.update(in_flight.popleft().get())
                progress and progress()
        while in_flight:
            counts.update(in_flight.popleft().get())
    return counts


DOCS_PER_COUNT = 1024
_worker_tokenizer = None


def _count(tok: Tokenizer, docs: list[str]) -> Counter:
    normalize, split, word = tok.normalizer.normalize_str, tok.pre_tokenizer.pre_tokenize_str, itemgetter(0)
    counts: Counter = Counter()
    for doc in docs:  # one call a document: faster than one over the batch joined
        counts.update(map(word, split(normalize(doc))))
    return counts


def _count_init(tokenizer_json: str):
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)


def _count_in_worker(docs: list[str]) -> Counter:
    return _count(_worker_tokenizer, docs)


_STAND_IN = 0xF0000  # Supplementary Private Use Area-A: one stand-in character per "##c" piece


def train_bpe(counts: Counter, vocab_size: int, min_frequency: int = 2, limit_alphabet: int = 1000,
              show_progress: bool = False) -> models.BPE:
    """BPE merges learned from word counts, deterministically: the same counts give the same model.

    The `tokenizers` trainer (tokenizers/src/models/bpe/trainer.rs, `tokenize_words`) numbers each
    `##c` piece the first time it meets it while walking a hash map in a random order, and its merge
    queue breaks ties between equal counts by those numbers; its `compute_alphabet` also cuts the
    alphabet at a tied count in hash-map order. So we choose the alphabet ourselves (the
    `limit_alphabet` most frequent characters, ties to the lower code point; other characters are
    dropped from words, as the library does), and train the library without a prefix on words whose
    non-initial characters are replaced by private-use stand-ins: every initial token is then one
    character, numbered in code-point order before any word is read, and every tie is decided by
    the counts alone. The stand-ins map back to `##c` afterwards."""
    chars: Counter = Counter()
    for w, c in counts.items():
        for ch in w:
            chars[ch] += c
    alphabet = sorted(ch for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:limit_alphabet])
    keep, stand_in, code = set(alphabet), {}, _STAND_IN
    for ch in alphabet:
        while chr(code) in keep:
            code += 1
        stand_in[ch], code = chr(code), code + 1
    original = {v: k for k, v in stand_in.items()}

    def words():  # each word repeated as often as it occurs, in a fixed order
        for w in sorted(counts):
            mapped = "".join(ch if i == 0 else stand_in[ch] for i, ch in enumerate(w) if ch in keep)
            if mapped:
                yield (mapped + " ") * counts[w]

    trainer = Tokenizer(models.BPE(unk_token="[UNK]"))
    trainer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer.train_from_iterator(words(), trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet, show_progress=show_progress))

    def unmap(piece: str) -> str:
        if piece[0] in original:
            return SUBWORD_PREFIX + "".join(original[ch] for ch in piece)
        return piece[0] + "".join(original.get(ch, ch) for ch in piece[1:])

    vocab = {(t if t in SPECIAL_TOKENS else unmap(t)): i for t, i in trainer.get_vocab().items()}
    assert len(vocab) == trainer.get_vocab_size()
    merges = [(unmap(a), unmap(b)) for a, b in
              (m if isinstance(m, list) else m.split(" ") for m in json.loads(trainer.to_str())["model"]["merges"])]
    return models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX)


def save_tokenizer(tok: Tokenizer, out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"tokenizer output {str(out)!r} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    path = out / TOKENIZER_FILE
    tmp = path.with_suffix(".json.tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return path


def continuation_ids(tok: Tokenizer) -> list[int]:
    """The ids of the pieces that continue a word ("##" pieces), sorted: for whole-word masking."""
    return sorted(i for t, i in tok.get_vocab().items() if t.startswith(SUBWORD_PREFIX))


def load_tokenizer(path) -> Tokenizer:
    """Load `tokenizer.json` from a directory (or the file itself) and check the special tokens."""
    p = Path(path)
    file = p / TOKENIZER_FILE if p.is_dir() else p
    if not file.is_file():
        raise UsageError(f"no tokenizer at {str(p)!r} (expected {TOKENIZER_FILE}); "
                         "train one with `electra tokenizer`")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a plain Exception on malformed JSON
        raise UsageError(f"{str(file)!r} is not a valid tokenizer file ({str(e).splitlines()[0]})")
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise UsageError(f"{str(file)!r} does not have {token} at id {i}; "
                             "train the tokenizer with `electra tokenizer`")
    return tok

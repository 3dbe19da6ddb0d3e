"""Train, save and load the BPE tokenizer (Hugging Face `tokenizers`), with fixed special-token ids.

The tokenizer splits on white space and punctuation (as BERT does), then applies BPE with a `##`
continuing-word prefix, so sub-word pieces merge back into words for display (`detect`). It is saved
as a standard `tokenizer.json`, with `[CLS] A [SEP] B [SEP]` templates, loadable by
`PreTrainedTokenizerFast` without code of ours.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from electra.config import DataConfig
from electra.corpus import ReadStats, check_corpus_files, read_documents
from electra.errors import UsageError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_FILE = "tokenizer.json"
SUBWORD_PREFIX = "##"


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
                    show_progress: bool = True) -> ReadStats:
    """Train BPE on the corpus files (streamed) and write `out_dir/tokenizer.json` atomically."""
    files = check_corpus_files(corpus)
    if vocab_size < len(SPECIAL_TOKENS) + 32:
        raise UsageError(f"--vocab-size {vocab_size} is too small; use at least {len(SPECIAL_TOKENS) + 32}")
    if vocab_size > 2**31 - 1:
        raise UsageError(f"--vocab-size {vocab_size} is too large")
    tok = build_tokenizer(lowercase, normalization)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=SUBWORD_PREFIX, limit_alphabet=1000, show_progress=show_progress,
    )
    stats = ReadStats()
    docs = (" ".join(sentences) for sentences in read_documents(files, doc_sep, stats))
    tok.train_from_iterator(docs, trainer=trainer)
    if stats.documents == 0:
        raise UsageError("the corpus has no usable text (only empty lines); give files with text")
    for i, token in enumerate(SPECIAL_TOKENS):  # the trainer puts them first; make sure
        assert tok.token_to_id(token) == i, (token, tok.token_to_id(token))
    save_tokenizer(tok, out_dir)
    return stats


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


def pad_batch(id_lists, type_lists, device="cpu"):
    """(ids, token types, attention mask) tensors of encoded texts, right-padded with [PAD] to the
    longest of them."""
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), PAD_ID, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, (x, y) in enumerate(zip(id_lists, type_lists)):
        ids[i, :len(x)], types[i, :len(y)] = torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)
    return ids.to(device), types.to(device), (ids != PAD_ID).to(device)

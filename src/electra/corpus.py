"""Reading raw text corpora: files -> documents -> sentences, streamed, never crashing on bytes.

Real corpora are messy (Latin-1 bytes, CRLF, NULs, empty lines). Every line is decoded as UTF-8;
undecodable byte sequences become U+FFFD and are counted in `ReadStats`, so that any file
tokenizes. Documents are one per line (`doc_sep="line"`) or separated by blank lines
(`doc_sep="blank"`, WikiText's layout). Sentences are kept apart because the example builder splits
sentence pairs at sentence boundaries (as google-research/electra's `ExampleBuilder` does with lines).
A corpus is files, folders, glob patterns, `builtin` (the public-domain books that ship with the
package, corpus_data/) or `hf:NAME[:CONFIG[:SPLIT]]` (Hugging Face `datasets`, hf_datasets.py).
"""

from __future__ import annotations

import glob
import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from electra.errors import UsageError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclass
class ReadStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    documents: int = 0
    replaced: int = 0  # undecodable byte sequences replaced by U+FFFD
    words: int = 0  # as the tokenizer's pre-tokenizer counts them (`train_tokenizer` sets it)


BUILTIN = "builtin"


def builtin_corpus() -> Path:
    """The corpus that ships with the package: 13 public-domain books, one paragraph per line
    (corpus_data/LICENSE.md says which and how it was made)."""
    return Path(__file__).with_name("corpus_data") / "books.txt.gz"


def check_corpus_files(paths: Iterable, text_field: str = "text") -> list:
    """Resolve a corpus (files, directories: every file inside, glob patterns, `.gz` files read
    decompressed; `builtin`; `hf:` datasets, whose text is in `text_field`), failing early with one
    clear message per kind of problem. Returns Paths and HFDatasets."""
    from electra.hf_datasets import PREFIX, HFDataset

    files = []
    for p in paths:
        if isinstance(p, HFDataset) or str(p).startswith(PREFIX):
            source = p if isinstance(p, HFDataset) else HFDataset(str(p), text_field)
            source.check()
            files.append(source)
            continue
        path = builtin_corpus() if str(p) == BUILTIN else Path(p)
        if not path.exists() and any(c in str(p) for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                raise UsageError(f"the pattern {str(p)!r} matches no file; check the path")
            expanded = [m for m in matches if m.is_file()]
        elif path.is_dir():
            expanded = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not expanded:
                raise UsageError(f"corpus directory {str(path)!r} holds no files; give text files or a "
                                 "folder of them")
        else:
            expanded = [path]
        for f in expanded:
            _check_text_file(f)
        files.extend(expanded)
    if not files:
        raise UsageError("no corpus files given; pass one or more text files with --corpus")
    return files


def _check_text_file(path: Path):
    if not path.exists():
        raise UsageError(f"corpus file {str(path)!r} does not exist; check the path")
    if path.stat().st_size == 0:
        raise UsageError(f"corpus file {str(path)!r} is empty; give a file with text in it")
    try:
        with open_text_bytes(path) as f:
            head = f.read(8192)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UsageError(f"corpus file {str(path)!r} cannot be read ({e}); is it a valid .gz file?")
    if b"\x00" in head:
        raise UsageError(f"corpus file {str(path)!r} looks binary (it has NUL bytes); "
                         "give plain text files")


def open_text_bytes(path: Path):
    """The file's bytes, decompressed for `.gz`."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def corpus_bytes(sources) -> int | None:
    """The corpus's size on disk, for progress bars (None when a dataset streams in)."""
    if any(not isinstance(s, Path) for s in sources):
        return None
    return sum(s.stat().st_size for s in sources)


def read_lines(path, stats: ReadStats) -> Iterator[str]:
    """Decoded lines without line endings (LF or CRLF), undecodable bytes replaced and counted.
    `stats.bytes` counts the bytes on disk (compressed for `.gz`; a dataset's text), for progress bars."""
    if not isinstance(path, Path):  # a dataset: each row's text, line by line
        stats.files += 1
        for text in path.rows():
            stats.bytes += len(text.encode("utf-8", errors="replace"))
            for line in text.split("\n"):
                stats.lines += 1
                yield line.rstrip("\r")
        return
    stats.files += 1
    with open(path, "rb") as disk, (gzip.open(disk, "rb") if path.suffix == ".gz" else disk) as f:
        start = stats.bytes
        for raw in f:
            stats.bytes = start + disk.tell() if f is not disk else stats.bytes + len(raw)
            stats.lines += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                stats.replaced += line.count("\ufffd") - raw.count("\ufffd".encode())
            yield line.rstrip("\r\n")
        stats.bytes = start + disk.tell()


def read_documents(paths: Iterable, doc_sep: str = "line",
                   stats: ReadStats | None = None) -> Iterator[list[str]]:
    """Yield documents as lists of sentences (non-empty, whitespace-trimmed strings)."""
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        doc: list[str] = []
        for line in read_lines(path, stats):
            text = " ".join(line.split())  # folds tabs, \r, runs of spaces
            if doc_sep == "line":
                if text:
                    stats.documents += 1
                    yield split_sentences(text)
            elif text:
                doc.extend(split_sentences(text))
            elif doc:
                stats.documents += 1
                yield doc
                doc = []
        if doc:  # a file's last paragraph; documents never span files
            stats.documents += 1
            yield doc


def split_sentences(text: str) -> list[str]:
    """A cheap sentence splitter (., ! or ? followed by space); only used to place segment splits."""
    return _SENTENCE_END.split(text)


def batched(iterable, n: int):
    """Lists of n items (the last one shorter), streamed."""
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch

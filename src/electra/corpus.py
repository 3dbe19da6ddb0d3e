"""Reading raw text corpora: files -> documents -> sentences, streamed, never crashing on bytes.

Real corpora are messy (Latin-1 bytes, CRLF, NULs, empty lines). Every line is decoded as UTF-8;
undecodable byte sequences become U+FFFD and are counted in `ReadStats`, so that any file
tokenizes. Documents are one per line (`doc_sep="line"`) or separated by blank lines
(`doc_sep="blank"`, WikiText's layout). Sentences are kept apart because the example builder splits
sentence pairs at sentence boundaries (as google-research/electra's `ExampleBuilder` does with lines).
"""

from __future__ import annotations

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


def check_corpus_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve corpus paths, failing early with one clear message per kind of problem."""
    files = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UsageError(f"corpus file {str(path)!r} does not exist; check the path")
        if path.is_dir():
            raise UsageError(f"corpus path {str(path)!r} is a directory; pass the text files in it")
        if path.stat().st_size == 0:
            raise UsageError(f"corpus file {str(path)!r} is empty; give a file with text in it")
        with open(path, "rb") as f:
            head = f.read(8192)
        if b"\x00" in head:
            raise UsageError(f"corpus file {str(path)!r} looks binary (it has NUL bytes); "
                             "give plain text files")
        files.append(path)
    if not files:
        raise UsageError("no corpus files given; pass one or more text files with --corpus")
    return files


def read_lines(path: Path, stats: ReadStats) -> Iterator[str]:
    """Decoded lines without line endings (LF or CRLF), undecodable bytes replaced and counted."""
    stats.files += 1
    with open(path, "rb") as f:
        for raw in f:
            stats.bytes += len(raw)
            stats.lines += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                stats.replaced += line.count("\ufffd") - raw.count("\ufffd".encode())
            yield line.rstrip("\r\n")


def read_documents(paths: Iterable[Path], doc_sep: str = "line",
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

"""Build the corpus that ships with the package (src/electra/corpus_data/books.txt.gz) from the 13
public-domain books in ../shared/data/pretrain/gutenberg: each book decoded (UTF-8, or cp1252 where
a file is not UTF-8), its "[Title by Author Year]" line and any Project Gutenberg licence text after
the end of the book dropped, hard-wrapped lines joined into paragraphs (blank lines separate them),
white space folded, one paragraph per line, gzip with a fixed timestamp: the same bytes every time.

    python scripts/make_builtin_corpus.py [--source DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
END_OF_BOOK = re.compile(r"^(\*\*\* ?END OF TH(E|IS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I)


def paragraphs(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[0].startswith("[") and lines[0].rstrip().endswith("]"):
        lines = lines[1:]  # "[Emma by Jane Austen 1816]"
    out, block = [], []
    for line in lines:
        if END_OF_BOOK.match(line.strip()):
            break
        if line.strip():
            block.append(line.strip())
        elif block:
            out.append(" ".join(" ".join(block).split()))
            block = []
    if block:
        out.append(" ".join(" ".join(block).split()))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "pretrain" / "gutenberg")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "electra" / "corpus_data" / "books.txt.gz")
    args = parser.parse_args()
    books = sorted(args.source.glob("*.txt"))
    lines = [p for book in books for p in paragraphs(book)]
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0,
                                                   filename="") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    words = sum(len(p.split()) for p in lines)
    print(f"{len(books)} books, {len(lines):,} paragraphs, {words:,} words -> {args.out} "
          f"({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

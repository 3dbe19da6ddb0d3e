"""The tokenizer as an artifact: the same corpus gives the same file, and the export reads text
exactly as we do (`transformers.AutoTokenizer` ids == ours) on arbitrary Unicode and real text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from electra.hf_tokenizer import load_hf_tokenizer, write_hf_tokenizer
from electra import tokenizer as tokenizer_module
from electra.tokenizer import load_tokenizer, train_tokenizer
from tests.conftest import TINY, make_corpus, run_cli, shared_file

MAX_LENGTH = 128


def _train_in_subprocess(corpus_files, out: Path, threads: int, workers: int):
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "electra", "tokenizer", "--corpus", *map(str, corpus_files),
                    "--vocab-size", "300", "--out", str(out), "--workers", str(workers)], check=True,
                   capture_output=True, env=env)
    return (out / "tokenizer.json").read_bytes()


def test_tokenizer_training_is_byte_identical_across_threads_workers_runs_and_file_order(tmp_path):
    # Twelve sentences repeated: many pairs tie in count, where the library's own trainer broke
    # ties in a random order (a different file on every run).
    a, b = make_corpus(tmp_path / "a.txt", 400, seed=1), make_corpus(tmp_path / "b.txt", 400, seed=2)
    files = {(threads, order): _train_in_subprocess(order, tmp_path / f"t{threads}{order[0].name}", threads,
                                                    workers=threads)
             for threads in (1, 2) for order in ((a, b), (b, a))}
    assert len(set(files.values())) == 1
    train_tokenizer([tmp_path / "*.txt"], tmp_path / "glob", vocab_size=300, show_progress=False, workers=1)
    assert (tmp_path / "glob" / "tokenizer.json").read_bytes() == files[(1, (a, b))]


def test_vocab_size_zero_takes_the_vocabulary_of_the_corpus_size(tmp_path, monkeypatch, corpus, capsys):
    stats = train_tokenizer([corpus], tmp_path / "fixed", vocab_size=150, show_progress=False, workers=1)
    assert load_tokenizer(tmp_path / "fixed").get_vocab_size() == 150 and stats.words > 10_000
    for least, expected in ((stats.words, 200), (stats.words + 1, 120)):  # the corpus at / just under the step
        monkeypatch.setattr(tokenizer_module, "AUTO_VOCAB_SIZES", ((least, 200), (0, 120)))
        auto = train_tokenizer([corpus], tmp_path / f"auto-{least}", vocab_size=0, show_progress=False, workers=1)
        assert auto.words == stats.words
        assert load_tokenizer(tmp_path / f"auto-{least}").get_vocab_size() == expected
    # `pretrain` says what it chose (the table as patched last) and records it, as if it had been given
    code, out, _ = run_cli(capsys, "pretrain", "--corpus", corpus, "--out", tmp_path / "run", "--max-steps", 1,
                           "--set", "train.time_budget=", *TINY, "--vocab-size", 0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert code == 0 and f"tokenizer: 120 pieces for {stats.words:,} words (data.vocab_size 0" in out
    assert config["data"]["vocab_size"] == config["model"]["vocab_size"] == 120


def test_the_same_pretrain_command_twice_gives_the_same_model(tmp_path, corpus):
    """Two processes, as a user runs it. No time budget: with one, the schedule follows the clock
    (docs/RELIABILITY.md, "Reproducibility")."""
    runs = [tmp_path / "one", tmp_path / "two"]
    for run in runs:
        subprocess.run([sys.executable, "-m", "electra", "pretrain", "--corpus", str(corpus), "--out", str(run),
                        "--max-steps", "4", "--seed", "5", "--set", "train.time_budget=", *TINY],
                       check=True, capture_output=True)
    for name in ("tokenizer.json", "data/train-00000.tokens", "data/index.json",
                 "checkpoints/step-00000004/model.safetensors", "checkpoints/step-00000004/optimizer.safetensors"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name


# --------------------------------------------------------------------------- export parity

@pytest.fixture(scope="module")
def one_thread_tokenizers():
    """Encoding one text at a time: the thread pool only costs time (set while this module runs)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    yield
    if before is None:
        del os.environ["TOKENIZERS_PARALLELISM"]
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = before


def _exported(ours, folder: Path):
    transformers = pytest.importorskip("transformers")
    folder.mkdir()
    write_hf_tokenizer(ours, folder, MAX_LENGTH, True)
    return transformers.AutoTokenizer.from_pretrained(folder)


def _google_vocabulary(folder: Path) -> Path:
    """A vocab.txt in Google's layout: [PAD] 0, [unusedN] 1-99, [UNK] [CLS] [SEP] [MASK] 100-103."""
    words = "the a of and to in is it was he for on are with as his they at one have this from".split()
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyzé"] + list("bcdefghijklmnopqrsuvwxyzé.,!?'\"-#[]")
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
             + list(dict.fromkeys(words + ["##ing", "##ed", "##s", "café", "李"] + pieces)))
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module", params=["our BPE", "Google WordPiece"])
def ours_and_theirs(request, tmp_path_factory, one_thread_tokenizers):
    root = tmp_path_factory.mktemp("parity")
    if request.param == "our BPE":
        train_tokenizer([make_corpus(root / "corpus.txt", 300)], root / "tok", vocab_size=200, show_progress=False)
        ours = load_tokenizer(root / "tok")
    else:
        ours, _ = load_hf_tokenizer(_google_vocabulary(root / "google"))
    return ours, _exported(ours, root / "hf")


FRAGMENTS = ["Lǐshì", "李氏", "☃", "café", "naïve", "e\u0301", "😀", "👩🏽‍💻", "\u200b", "\u200d", "\ufeff", "\u00ad",
             "\x00", "\x01", "\x7f", "\x85", "\t", "\n", "\r\n", "   ", "\u00a0", "\u3000", "\u2028", "ﬁ", "Ⅻ",
             "①", "ß", "İ", "Ω", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[mask]", "##", "#", "the", "was",
             "ing", "Hello,", "world!", " ", "don't", "3.14", "--", "\U000E0041", "\U0010FFFD"]
any_char = st.characters(blacklist_categories=("Cs",))  # every code point a Python str can hold
TEXT = st.one_of(
    st.text(any_char, max_size=40),
    st.lists(st.sampled_from(FRAGMENTS), max_size=30).map(" ".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(any_char, max_size=4)), max_size=60).map("".join),
    st.lists(st.sampled_from(FRAGMENTS), min_size=60, max_size=120).map(" ".join),  # beyond MAX_LENGTH
)


def _check_same_ids(ours, theirs, a: str, b: str, max_length: int):
    ours.no_truncation()
    assert theirs(a)["input_ids"] == ours.encode(a).ids
    # a pair as a batch of one: transformers reads `theirs(a, "")` as a single text (it tests `if text_pair`)
    both, pair = theirs([a], [b]), ours.encode(a, b)
    assert (both["input_ids"][0], both["token_type_ids"][0]) == (pair.ids, pair.type_ids)
    ours.enable_truncation(max_length)  # as `detect` and `finetune` do: longest first, [CLS]/[SEP] counted
    try:
        assert theirs(a, truncation=True, max_length=max_length)["input_ids"] == ours.encode(a).ids
        assert theirs([a], [b], truncation=True, max_length=max_length)["input_ids"][0] == ours.encode(a, b).ids
    finally:
        ours.no_truncation()


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(a=TEXT, b=TEXT, max_length=st.sampled_from([MAX_LENGTH, 16, 5]))
def test_exported_tokenizer_gives_our_ids_on_any_text(ours_and_theirs, a, b, max_length):
    """Accents, CJK, emoji, control and zero-width characters, whitespace runs, special-token
    strings, texts past the length limit, pairs: the same ids, truncated alike. (The WordPiece
    case failed on "[MASK]" typed in a text until the import made it one token, as HF does.)"""
    _check_same_ids(*ours_and_theirs, a, b, max_length)


def test_exported_tokenizer_gives_our_ids_on_wikitext(tmp_path, one_thread_tokenizers):
    """A tokenizer trained on the first 3 MB of IMDB, on the first 200 WikiText-2 lines of 40-400
    characters that are not headings (accents, CJK, symbols outside its alphabet, long lines)."""
    imdb, wiki = shared_file("pretrain/imdb-unsup.txt"), shared_file("pretrain/wikitext-2/wiki.valid.raw")
    sample = tmp_path / "imdb-3mb.txt"
    with open(imdb, "rb") as f:
        sample.write_bytes(f.read(3_000_000).rsplit(b"\n", 1)[0] + b"\n")
    train_tokenizer([sample], tmp_path / "tok", vocab_size=8192, show_progress=False)
    ours = load_tokenizer(tmp_path / "tok")
    theirs = _exported(ours, tmp_path / "hf")
    lines = [line.strip() for line in wiki.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if 40 <= len(line) <= 400 and not line.startswith("=")][:200]
    assert len(lines) == 200 and sum(not line.isascii() for line in lines) > 10
    unknown = sum(ours.token_to_id("[UNK]") in ours.encode(line).ids for line in lines)
    assert unknown > 10  # characters outside the vocabulary, where the two could part ways
    for a, b in zip(lines, lines[1:] + lines[:1]):
        _check_same_ids(ours, theirs, a, b, MAX_LENGTH)

"""Tokenizer training, corpus preparation and example building on real and messy text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from electra.corpus import read_documents
from electra.data import PretrainingData, load_index, prepare_corpus, stream_indices
from electra.errors import UsageError
from electra.tokenizer import CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from tests.conftest import shared_file


def test_special_tokens_have_fixed_ids_and_templates(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    enc = tok.encode("The Film opens.", "Why?")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert enc.type_ids[-1] == 1 and enc.type_ids[0] == 0
    assert "the" in enc.tokens and "film" in enc.tokens, "lowercased by default"


def test_lowercasing_is_configurable(tmp_path, corpus):
    train_tokenizer([corpus], tmp_path, vocab_size=200, lowercase=False, show_progress=False)
    assert "The" in load_tokenizer(tmp_path).encode("The").tokens


def test_messy_bytes_crlf_and_empty_lines_tokenize_and_prepare(tmp_path):
    messy = tmp_path / "messy.txt"
    messy.write_bytes(b"Caf\xe9 cr\xe8me \xff\xfe is nice.\r\n\r\n\r\nSecond line \xe2\x80\x94 fine.\r\n"
                      + b"A third document, in UTF-8: na\xc3\xafve.\n" * 20 + b"\n   \n")
    stats = train_tokenizer([messy], tmp_path / "tok", vocab_size=100, show_progress=False)
    assert stats.replaced == 4, "each undecodable byte (\\xe9, \\xe8, \\xff, \\xfe) is replaced and counted"
    assert stats.documents == 22, "empty and blank lines are not documents"
    index = prepare_corpus([messy], tmp_path / "tok", tmp_path / "data", val_fraction=0, show_progress=False)
    assert index["read"]["replaced"] == 4
    data = PretrainingData(tmp_path / "data", "train", seq_len=16)
    ids, _ = data.example(0)
    assert ids[0] == CLS_ID and SEP_ID in ids


def test_gutenberg_books_tokenize_and_prepare(tmp_path):
    files = sorted(shared_file("pretrain/gutenberg").glob("*.txt"))
    stats = train_tokenizer(files, tmp_path / "tok", vocab_size=2000, show_progress=False)
    assert stats.files == 13 and stats.replaced > 0, "the Latin-1 bytes are counted"
    index = prepare_corpus(files, tmp_path / "tok", tmp_path / "data", show_progress=False)
    assert index["splits"]["train"]["tokens"] > 1_000_000 and index["splits"]["val"]["tokens"] > 0


def test_blank_line_documents(tmp_path):
    text = "\n = Title = \n\n First paragraph line one .\n line two .\n\n Second paragraph .\n"
    path = tmp_path / "wiki.txt"
    path.write_text(text)
    docs = list(read_documents([path], "blank"))
    assert docs == [["= Title ="], ["First paragraph line one .", "line two ."], ["Second paragraph ."]]
    assert len(list(read_documents([path], "line"))) == 4


def test_prepare_writes_shards_index_and_a_fixed_validation_slice(data_dir, corpus):
    index = load_index(data_dir)
    assert index["dtype"] == "uint16"
    n_docs = index["read"]["documents"]
    val = index["splits"]["val"]["shards"][0]["documents"]
    assert val == len(range(0, n_docs, 10)), "every 10th document is held out (val_fraction 0.1)"
    train_tokens = np.memmap(data_dir / "train-00000.tokens", dtype=np.uint16, mode="r")
    assert len(train_tokens) == index["splits"]["train"]["tokens"]
    assert train_tokens.max() < index["vocab_size"] and (train_tokens > SEP_ID).all()
    counts = np.load(data_dir / "token_counts.npy")
    assert counts.sum() == index["splits"]["train"]["tokens"]


def test_examples_are_packed_sentence_pairs_with_segment_ids(data_dir):
    data = PretrainingData(data_dir, "train", seq_len=32, single_segment_prob=0.1, seed=0)
    tokens = np.memmap(data_dir / "train-00000.tokens", dtype=np.uint16, mode="r")
    sentence_starts = set(np.load(data_dir / "train-00000.sentences.npy").tolist())
    singles, padded = 0, []
    for i in range(len(data)):
        ids, types = data.example(i)
        real = ids != PAD_ID
        if (~real).any():
            padded.append(i)
        assert ids[0] == CLS_ID
        seps = np.flatnonzero(ids == SEP_ID)
        content = np.concatenate([ids[1:seps[0]], ids[seps[0] + 1:seps[-1]]]) if len(seps) == 2 else ids[1:seps[0]]
        start = i * data.stride
        np.testing.assert_array_equal(content, tokens[start:start + len(content)],
                                      err_msg="examples are consecutive text")
        if len(seps) == 1:
            singles += 1
            assert not types.any()
        else:
            a_len = seps[0] - 1
            assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:seps[1] + 1] == 1).all()
            inside = [p for p in range(start + 1, start + len(content)) if p in sentence_starts]
            if inside:  # else one sentence fills the window and is cut where it must be
                assert start + a_len in sentence_starts, "B starts at a sentence boundary"
    assert set(padded) <= {len(data) - 1}, "padding only where the corpus runs out (its last example)"
    assert 0.03 < singles / len(data) < 0.2


def test_examples_are_deterministic_and_the_stream_covers_each_epoch(data_dir):
    a = PretrainingData(data_dir, seq_len=32, seed=3)
    b = PretrainingData(data_dir, seq_len=32, seed=3)
    assert all(np.array_equal(a.example(i)[0], b.example(i)[0]) for i in range(10))
    n = len(a)
    first_epoch = stream_indices(n, seed=1, start=0, count=n)
    assert sorted(first_epoch.tolist()) == list(range(n))
    straddling = stream_indices(n, seed=1, start=n - 3, count=6)
    np.testing.assert_array_equal(straddling[:3], first_epoch[-3:])


def test_prepare_refuses_a_non_empty_output_and_keeps_it(tmp_path, corpus, tokenizer_dir):
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="exists"):
        prepare_corpus([corpus], tokenizer_dir, out, show_progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["data"], "no temporary folder left behind"


def test_imdb_prepares_with_the_expected_validation_slice(tmp_path):
    imdb = shared_file("pretrain/imdb-unsup.txt")
    head = tmp_path / "imdb-head.txt"
    with open(imdb, "rb") as f:
        head.write_bytes(b"".join(next(f) for _ in range(2000)))
    train_tokenizer([head], tmp_path / "tok", vocab_size=1000, show_progress=False)
    index = prepare_corpus([head], tmp_path / "tok", tmp_path / "data", show_progress=False)
    assert index["splits"]["val"]["shards"][0]["documents"] == 10  # documents 0, 200, ..., 1800
    assert json.loads((tmp_path / "data" / "index.json").read_text()) == index


def test_prepare_reads_folders_patterns_and_gzip_and_workers_change_nothing(tmp_path, corpus, tokenizer_dir):
    import gzip

    lines = corpus.read_text().splitlines()
    folder = tmp_path / "texts"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text("\n".join(lines[:100]) + "\n")
    with gzip.open(folder / "more" / "b.txt.gz", "wt") as f:
        f.write("\n".join(lines[100:]) + "\n")
    plain = prepare_corpus([corpus], tokenizer_dir, tmp_path / "plain", val_fraction=0.1, show_progress=False)
    for name, source, workers in (("folder", [folder], 1), ("pattern", [folder / "*.txt", folder / "more" / "*.gz"], 2)):
        index = prepare_corpus(source, tokenizer_dir, tmp_path / name, val_fraction=0.1, show_progress=False,
                               workers=workers)
        assert index["splits"] == plain["splits"], name
        for f in (tmp_path / "plain").iterdir():
            if f.suffix in (".tokens", ".npy"):
                assert (tmp_path / name / f.name).read_bytes() == f.read_bytes(), (name, f.name)

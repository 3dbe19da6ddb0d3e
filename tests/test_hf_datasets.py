"""Corpora and GLUE through Hugging Face `datasets`, tested offline: the code path a hub name takes,
on local datasets the tests write (parquet, save_to_disk); and the corpus that ships with the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from electra.corpus import builtin_corpus, read_documents
from tests.conftest import SENTENCES, TINY, make_corpus, make_sst2, run_cli, sst2_label

datasets = pytest.importorskip("datasets")


def _offline(*argv):
    """`electra ARGV` in a process that cannot reach the hub (as CI and these machines)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "electra", *map(str, argv)], capture_output=True, text=True, env=env)


def test_the_built_in_corpus_trains_without_any_file_given(tmp_path, capsys):
    docs = list(read_documents([builtin_corpus()]))
    assert len(docs) == 17_199 and sum(len(" ".join(d).split()) for d in docs) == 1_057_501
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "pretrain", "--out", run, "--max-steps", 2, "--set", "train.time_budget=", *TINY)
    assert code == 0, out
    assert "built-in corpus" in out
    assert json.loads((run / "data" / "index.json").read_text())["corpus"] == [str(builtin_corpus())]
    code, out, _ = run_cli(capsys, "detect", "--model", run, "the queen is a powerful ruler .")
    assert code == 0 and out.splitlines()[1].split()[0] == "the"


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_an_hf_corpus_prepares_exactly_as_the_same_text_in_a_file(tmp_path, tokenizer_dir, layout, capsys):
    text = make_corpus(tmp_path / "corpus.txt", 120, seed=7)
    rows = text.read_text().splitlines()
    table = datasets.Dataset.from_dict({"body": rows, "stars": list(range(len(rows)))})
    if layout == "parquet":
        table.to_parquet(str(tmp_path / "reviews.parquet"))
        spec = f"hf:{tmp_path / 'reviews.parquet'}"
    else:
        datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "saved"))
        spec = f"hf:{tmp_path / 'saved'}:train"
    for name, corpus in (("from-file", [text]), ("from-dataset", [spec, "--text-field", "body"])):
        code, out, err = run_cli(capsys, "prepare", "--corpus", *corpus, "--tokenizer", tokenizer_dir, "--out",
                                 tmp_path / name, "--val-fraction", "0.1")
        assert code == 0, err
    for f in ("train-00000.tokens", "val-00000.tokens", "train-00000.documents.npy", "token_counts.npy"):
        assert (tmp_path / "from-file" / f).read_bytes() == (tmp_path / "from-dataset" / f).read_bytes(), f
    code, _, err = run_cli(capsys, "prepare", "--corpus", spec, "--tokenizer", tokenizer_dir, "--out", tmp_path / "x")
    assert code == 2 and "has no column 'text'" in err and "--text-field" in err
    assert not (tmp_path / "x").exists()


def test_a_hub_name_without_network_is_a_one_line_error(tmp_path):
    proc = _offline("pretrain", "--corpus", "hf:Salesforce/wikitext:wikitext-2-raw-v1:train", "--out", tmp_path / "r")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot reach the Hugging Face hub for 'Salesforce/wikitext'" in proc.stderr
    assert "save_to_disk" in proc.stderr and not (tmp_path / "r").exists()
    proc = _offline("finetune", "--model", "none", "--tokenizer", tmp_path, "--task", "sst2", "--out", tmp_path / "f")
    assert proc.returncode == 2 and "nyu-mll/glue" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_glue_through_datasets_fine_tunes_as_the_tsv_files_do(tmp_path, tokenizer_dir, capsys):
    labels = [sst2_label(s) for s in SENTENCES]
    tsv = make_sst2(tmp_path / "SST-2")
    split = lambda y: {"sentence": [f"{s} " for s in SENTENCES], "label": y, "idx": list(range(len(SENTENCES)))}  # noqa: E731
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(split(labels)),
                          "validation": datasets.Dataset.from_dict(split(labels)),
                          "test": datasets.Dataset.from_dict(split([-1] * len(SENTENCES)))}).save_to_disk(
        str(tmp_path / "glue-sst2"))
    reports = {}
    for name, data in (("tsv", tsv), ("datasets", f"hf:{tmp_path / 'glue-sst2'}")):
        code, out, err = run_cli(capsys, "finetune", "--model", "none", "--tokenizer", tokenizer_dir, "--task", "sst2",
                                 "--data", data, "--out", tmp_path / name, "--epochs", 2, "--no-progress",
                                 "--threads", 1)
        assert code == 0, err
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        reports[name]["test"] = (tmp_path / name / "predictions" / "test.tsv").read_text()
    assert reports["datasets"]["seeds"] == reports["tsv"]["seeds"]  # the same examples, the same run
    assert reports["datasets"]["test"] == reports["tsv"]["test"]  # the submission layout, indices included

"""The command line: the whole pipeline on a tiny corpus, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from electra.cli import main

TINY = ["--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.intermediate_size=37",
        "--set", "model.embedding_size=24", "--set", "train.threads=1", "--seq-len", "32", "--batch-size", "8",
        "--vocab-size", "200", "--no-progress"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_pretrain_evaluate_detect_end_to_end(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "pretrain", "--corpus", corpus, "--out", run, "--max-steps", 6,
                           "--eval-every", 3, "--checkpoint-every", 3, *TINY)
    assert code == 0, out
    assert "eval      6" in out and "tok/s" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 32 and cfg["data"]["seq_len"] == 32

    code, out, _ = run_cli(capsys, "evaluate", "--model", run, "--corpus", corpus, "--json", "--max-examples", 40)
    metrics = json.loads(out)
    for key in ("gen_accuracy", "disc_loss", "disc_label_entropy", "disc_accuracy", "disc_precision",
                "disc_recall", "disc_auc", "disc_auc_unigram", "rarity_auc_unigram"):
        assert isinstance(metrics[key], float), key
    assert metrics["step"] == 6

    code, out, _ = run_cli(capsys, "detect", "--model", run, "the queen is a powerful ruler .")
    lines = out.splitlines()
    assert lines[0].split() == ["Token", "Is_Replaced_Prob"]
    assert [l.split()[0] for l in lines[1:]] == ["the", "queen", "is", "a", "powerful", "ruler", "."]
    assert all(0 <= float(l.split()[1]) <= 1 for l in lines[1:])

    code, out, _ = run_cli(capsys, "detect", "--model", run, "--json", "--threshold", 0, "--top-k", 2,
                           "the queen is a powerful ruler .", "a stray dog")
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["words"] for r in results] == [["the", "queen", "is", "a", "powerful", "ruler", "."],
                                             ["a", "stray", "dog"]]
    for r in results:
        assert len(r["tokens"]) == len(r["token_probs"]) >= len(r["words"]) == len(r["word_probs"])
        assert all(r["flagged"]) and all(len(s) == 2 and not s[0].startswith("##") for s in r["suggestions"])
    texts = tmp_path / "texts.txt"
    texts.write_text("the queen is a powerful ruler .\n\na stray dog\n")
    code, from_file, _ = run_cli(capsys, "detect", "--model", run, "--json", "--threshold", 0, "--top-k", 2,
                                 "--file", texts, "--batch-size", 1)
    for a, b in zip([json.loads(line) for line in from_file.splitlines()], results, strict=True):
        assert a["tokens"] == b["tokens"] and a["token_probs"] == pytest.approx(b["token_probs"], abs=1e-5)
    code, out, _ = run_cli(capsys, "detect", "--model", run, "--json", "--threshold", 1.0, "a stray dog")
    assert json.loads(out)["suggestions"] == [[], [], []]
    proc = subprocess.run([sys.executable, "-m", "electra", "detect", "--model", str(run), "--json"],
                          input="a stray dog\n", capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["words"] == ["a", "stray", "dog"]

    code, out, _ = run_cli(capsys, "pretrain", "--out", run, "--resume", "--max-steps", 8, "--no-progress")
    assert code == 0 and "step-00000008" in {p.name for p in (run / "checkpoints").iterdir()}


def bad_inputs(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\t\n")
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    existing_run = tmp_path / "taken"
    existing_run.mkdir()
    (existing_run / "keep.txt").write_text("x")
    return {
        "missing corpus": (["pretrain", "--corpus", tmp_path / "nope.txt", "--out", tmp_path / "r1"], "does not exist"),
        "empty corpus": (["pretrain", "--corpus", empty, "--out", tmp_path / "r2"], "is empty"),
        "no usable text": (["tokenizer", "--corpus", blank, "--out", tmp_path / "t"], "no usable text"),
        "binary corpus": (["prepare", "--corpus", binary, "--tokenizer", tmp_path, "--out", tmp_path / "d"], "binary"),
        "directory as corpus": (["tokenizer", "--corpus", tmp_path, "--out", tmp_path / "t2"], "is a directory"),
        "unknown preset": (["pretrain", "--corpus", corpus, "--out", tmp_path / "r3", "--preset", "smal"],
                           "unknown preset 'smal' (did you mean 'small'?)"),
        "unknown config key": (["pretrain", "--corpus", corpus, "--out", tmp_path / "r4", "--set", "model.hiden_size=3"],
                               "did you mean 'model.hidden_size'?"),
        "wrong value type": (["pretrain", "--corpus", corpus, "--out", tmp_path / "r5", "--set", "train.lr=fast"],
                             "expects float"),
        "resume without checkpoint": (["pretrain", "--out", tmp_path / "r6", "--resume"], "nothing to resume"),
        "run directory taken": (["pretrain", "--corpus", corpus, "--out", existing_run], "already exists"),
        "model that is no run": (["detect", "--model", tmp_path, "hello"], "not a run directory"),
    }


CASES = ["missing corpus", "empty corpus", "no usable text", "binary corpus", "directory as corpus",
         "unknown preset", "unknown config key", "wrong value type", "resume without checkpoint",
         "run directory taken", "model that is no run"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_one_line_error(case, tmp_path, corpus, capsys):
    argv, message = bad_inputs(tmp_path, corpus)[case]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("electra: error: "), err
    assert message in err
    assert "Traceback" not in err
    if case == "run directory taken":
        assert (tmp_path / "taken" / "keep.txt").read_text() == "x"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, "no temporary folder left behind"


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "electra", "pretrain", "--corpus", str(tmp_path / "x.txt"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr

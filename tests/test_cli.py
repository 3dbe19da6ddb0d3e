"""The command line: the whole pipeline on a tiny corpus, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from electra.cli import COMMANDS, main
from tests.conftest import TINY, run_cli


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


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "electra", "pretrain", "--corpus", str(tmp_path / "x.txt"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


@pytest.mark.parametrize("argv", [[command, "--bad-flag"] for command in COMMANDS] + [
    ["pretrain", "--out", "r", "--lr", "abc"], ["bench", "--steps", "ten"], ["compare", "--seeds", "1,x"], []])
def test_usage_errors_are_one_line_pointing_at_help(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err.count("\n") == 1 and err.startswith("electra") and "--help" in err, err

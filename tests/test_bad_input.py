"""Bad input, command by command: a one-line error naming the problem and the fix, exit code 2, no
traceback, and nothing left behind. `BAD_INPUTS` is the table of docs/RELIABILITY.md; regenerate
that table with `python -m tests.test_bad_input`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from electra.cli import main
from tests.conftest import TINY, make_corpus

POST_LN = ["--set", "model.norm_position=post", "--set", "model.attention_bias=none"]


class Setup:
    """Files the cases point at, made on demand in one folder."""

    def __init__(self, root: Path, corpus: Path, run: Path, post_ln_run: Path):
        self.root, self.corpus, self.run, self.post_ln_run = root, corpus, run, post_ln_run

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def folder(self, name: str, files: dict | None = None) -> Path:
        path = self.root / name
        path.mkdir()
        for n, content in (files or {}).items():
            (path / n).write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def run_copy(self, name: str, source: Path | None = None) -> Path:
        return Path(shutil.copytree(source or self.run, self.root / name))

    def edited_run_config(self, name: str, section: str, key: str, value) -> Path:
        run = self.run_copy(name)
        cfg = json.loads((run / "config.json").read_text())
        cfg[section][key] = value
        (run / "config.json").write_text(json.dumps(cfg))
        return run

    def damaged_run(self, name: str) -> Path:
        run = self.run_copy(name)
        for ckpt in (run / "checkpoints").iterdir():
            weights = ckpt / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:-100])
        return run

    def export(self, name: str) -> Path:
        assert main(["export", "--model", str(self.post_ln_run), "--out", str(self.root / name)]) == 0
        return self.root / name


# case name -> (command, what is wrong, argv builder, the fragment the message must contain)
BAD_INPUTS = {
    "tokenizer: missing corpus": ("tokenizer", "a corpus path that does not exist",
        lambda s: ["tokenizer", "--corpus", s.root / "nope.txt", "--out", s.root / "t"], "does not exist"),
    "tokenizer: empty directory as corpus": ("tokenizer", "a corpus directory with no files in it",
        lambda s: ["tokenizer", "--corpus", s.folder("texts"), "--out", s.root / "t"], "holds no files"),
    "tokenizer: pattern matching nothing": ("tokenizer", "`--corpus 'texts/*.txt'` matching no file",
        lambda s: ["tokenizer", "--corpus", s.root / "none" / "*.txt", "--out", s.root / "t"], "matches no file"),
    "tokenizer: broken gzip": ("tokenizer", "a .gz file that is not gzip",
        lambda s: ["tokenizer", "--corpus", s.file("x.txt.gz", "plain text, not gzip"), "--out", s.root / "t"],
        "is it a valid .gz file?"),
    "tokenizer: empty corpus": ("tokenizer", "an empty file",
        lambda s: ["tokenizer", "--corpus", s.file("empty.txt", ""), "--out", s.root / "t"], "is empty"),
    "tokenizer: blank lines only": ("tokenizer", "a file of blank lines",
        lambda s: ["tokenizer", "--corpus", s.file("blank.txt", "\n  \n\t\n"), "--out", s.root / "t"],
        "no usable text"),
    "tokenizer: binary file": ("tokenizer", "a binary file",
        lambda s: ["tokenizer", "--corpus", s.file("x.bin", b"\x00\x01\x02" * 100), "--out", s.root / "t"],
        "looks binary"),
    "tokenizer: tiny vocabulary": ("tokenizer", "`--vocab-size 10`",
        lambda s: ["tokenizer", "--corpus", s.corpus, "--vocab-size", 10, "--out", s.root / "t"], "is too small"),
    "prepare: no tokenizer": ("prepare", "a tokenizer directory without tokenizer.json",
        lambda s: ["prepare", "--corpus", s.corpus, "--tokenizer", s.folder("tok"), "--out", s.root / "d"],
        "no tokenizer at"),
    "prepare: broken tokenizer": ("prepare", "a tokenizer.json that is not one",
        lambda s: ["prepare", "--corpus", s.corpus, "--tokenizer", s.folder("tok", {"tokenizer.json": "{oops"}),
                   "--out", s.root / "d"], "is not a valid tokenizer file"),
    "prepare: output taken": ("prepare", "an output directory with files in it",
        lambda s: ["prepare", "--corpus", s.corpus, "--tokenizer", s.run, "--out", s.folder("prepared", {"keep": "x"})],
        "already exists and is not empty"),
    "prepare: bad validation share": ("prepare", "`--val-fraction 1.5`",
        lambda s: ["prepare", "--corpus", s.corpus, "--tokenizer", s.run, "--out", s.root / "d",
                   "--val-fraction", 1.5], "--val-fraction must be in [0, 1)"),
    "pretrain: unknown preset": ("pretrain", "`--preset smal`",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--preset", "smal"],
        "unknown preset 'smal' (did you mean 'small'?)"),
    "pretrain: unknown config key": ("pretrain", "`--set model.hiden_size=3`",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--set", "model.hiden_size=3"],
        "did you mean 'model.hidden_size'?"),
    "pretrain: wrong value type": ("pretrain", "`--set train.lr=fast`",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--set", "train.lr=fast"],
        "expects float"),
    "pretrain: config file with wrong type": ("pretrain", "a TOML config whose value has the wrong type",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--config",
                   s.file("c.toml", "[train]\nbatch_size = 'many'\n")], "expects int"),
    "pretrain: config file not TOML": ("pretrain", "a config file that does not parse",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--config",
                   s.file("c.toml", "[train\n")], "is not valid TOML"),
    "pretrain: bad duration": ("pretrain", "`--time-budget 10 parsecs`",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--time-budget", "10 parsecs"],
        "cannot read the duration"),
    "pretrain: sequence longer than positions": ("pretrain", "`--seq-len 1024` on a 128-position model",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.root / "r", "--seq-len", 1024],
        "exceeds model.max_position_embeddings"),
    "pretrain: corpus and data": ("pretrain", "both `--corpus` and `--data`",
        lambda s: ["pretrain", "--corpus", s.corpus, "--data", s.run / "data", "--out", s.root / "r"],
        "give either --corpus"),
    "pretrain: data not prepared": ("pretrain", "`--data` pointing at raw text",
        lambda s: ["pretrain", "--data", s.folder("raw"), "--out", s.root / "r"],
        "is not a prepared data directory"),
    "pretrain: run directory taken": ("pretrain", "an --out that holds other files",
        lambda s: ["pretrain", "--corpus", s.corpus, "--out", s.folder("taken", {"keep.txt": "x"})],
        "already exists"),
    "pretrain: resume without a run": ("pretrain", "`--resume` of a directory with no run",
        lambda s: ["pretrain", "--out", s.root / "r", "--resume"], "nothing to resume"),
    "pretrain: resume with another corpus": ("pretrain", "`--resume --corpus` naming another file than the run's",
        lambda s: ["pretrain", "--out", s.run_copy("copy"), "--resume", "--corpus", s.file("other.txt", "other text\n")],
        "differs from the one"),
    "pretrain: resume with another preset": ("pretrain", "`--resume --preset small` of a `tiny` run",
        lambda s: ["pretrain", "--out", s.run_copy("copy"), "--resume", "--preset", "small"],
        "was started with --preset tiny"),
    "pretrain: resume with every checkpoint damaged": ("pretrain", "`--resume` when every checkpoint is truncated",
        lambda s: ["pretrain", "--out", s.damaged_run("damaged"), "--resume"], "no usable checkpoint"),
    "evaluate: model that is no run": ("evaluate", "`--model` pointing at a folder that is no run",
        lambda s: ["evaluate", "--model", s.folder("x"), "--corpus", s.corpus], "not a run directory"),
    "evaluate: missing step": ("evaluate", "`--step 5` that was never saved",
        lambda s: ["evaluate", "--model", s.run, "--corpus", s.corpus, "--step", 5], "has no checkpoint for step 5"),
    "evaluate: damaged checkpoint": ("evaluate", "a truncated model.safetensors",
        lambda s: ["evaluate", "--model", s.damaged_run("damaged"), "--corpus", s.corpus], "is damaged"),
    "evaluate: other architecture": ("evaluate", "a checkpoint whose config.json says another hidden size",
        lambda s: ["evaluate", "--model", s.edited_run_config("edited", "model", "hidden_size", 48),
                   "--corpus", s.corpus], "written for another architecture"),
    "evaluate: tokenizer does not match": ("evaluate", "a tokenizer.json of 200 tokens beside a 300-token checkpoint",
        lambda s: ["evaluate", "--model", s.edited_run_config("edited", "model", "vocab_size", 300),
                   "--corpus", s.corpus], "tokens but the model expects 300"),
    "detect: nothing to score": ("detect", "`--file` with only blank lines",
        lambda s: ["detect", "--model", s.run, "--file", s.file("blank.txt", "\n\n")], "no text to score"),
    "detect: missing file": ("detect", "`--file` that does not exist",
        lambda s: ["detect", "--model", s.run, "--file", s.root / "nope.txt"], "cannot read --file"),
    "detect: directory as --file": ("detect", "a directory where a file is expected",
        lambda s: ["detect", "--model", s.run, "--file", s.folder("texts")], "cannot read --file"),
    "detect: threshold out of range": ("detect", "`--threshold 2`",
        lambda s: ["detect", "--model", s.run, "--threshold", 2, "hello"], "--threshold must be in [0, 1]"),
    "export: output taken": ("export", "an --out with files in it, no `--force`",
        lambda s: ["export", "--model", s.post_ln_run, "--out", s.folder("hf", {"keep": "x"})],
        "pass --force to replace it"),
    "import: no config": ("import", "a folder without config.json",
        lambda s: ["import", "--hf", s.folder("hf"), "--out", s.root / "r"], "no config.json"),
    "import: not ELECTRA": ("import", "a BERT config.json",
        lambda s: ["import", "--hf", s.folder("hf", {"config.json": json.dumps({"model_type": "bert"})}),
                   "--out", s.root / "r"], "is not an ELECTRA checkpoint (model_type 'bert')"),
    "import: pickle weights only": ("import", "pytorch_model.bin and no safetensors",
        lambda s: ["import", "--hf", _without_safetensors(s), "--out", s.root / "r"], "are never loaded"),
    "import: truncated weights": ("import", "a model.safetensors cut in half",
        lambda s: ["import", "--hf", _truncated_export(s), "--out", s.root / "r"], "may be truncated"),
    "finetune: no train file": ("finetune", "a task folder without train.tsv",
        lambda s: ["finetune", "--model", s.run, "--task", "sst2", "--data", s.folder("SST-2"), "--out", s.root / "r"],
        "no train.tsv"),
    "finetune: empty file": ("finetune", "an SST-2 train.tsv with only its header",
        lambda s: ["finetune", "--model", s.run, "--task", "sst2", "--data",
                   s.folder("SST-2", {"train.tsv": "sentence\tlabel\n", "dev.tsv": "sentence\tlabel\nok\t1\n"}),
                   "--out", s.root / "r"], "has no examples"),
    "finetune: wrong columns": ("finetune", "`--text-column text` for a file whose columns are review, stars",
        lambda s: ["finetune", "--model", s.run, "--task", "custom", "--data",
                   s.folder("mine", {"train.csv": "review,stars\ngood,5\nbad,1\n", "dev.csv": "review,stars\nok,3\n"}),
                   "--text-column", "text", "--label-column", "stars", "--out", s.root / "r"], "has no column 'text'"),
    "finetune: label outside the task's labels": ("finetune", "an RTE label `maybe`",
        lambda s: ["finetune", "--model", s.run, "--task", "rte", "--data", s.folder("RTE", {
            "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"}), "--out", s.root / "r"],
        "label 'maybe' is not one of rte's labels"),
    "finetune: score outside the range": ("finetune", "an STS-B score of 7",
        lambda s: ["finetune", "--model", s.run, "--task", "stsb", "--data", s.folder("STS-B", {
            "train.tsv": _STSB_HEADER + "0\tg\tf\t2012\t1\tn\tn\ta\tb\t7.000\n",
            "dev.tsv": _STSB_HEADER + "0\tg\tf\t2012\t1\tn\tn\ta\tb\t1.000\n"}), "--out", s.root / "r"],
        "score 7.000 is outside stsb's range [0, 5]"),
    "finetune: non-numeric label": ("finetune", "an STS-B score `high`",
        lambda s: ["finetune", "--model", s.run, "--task", "stsb", "--data", s.folder("STS-B", {
            "train.tsv": _STSB_HEADER + "0\tg\tf\t2012\t1\tn\tn\ta\tb\thigh\n",
            "dev.tsv": _STSB_HEADER + "0\tg\tf\t2012\t1\tn\tn\ta\tb\t1.000\n"}), "--out", s.root / "r"],
        "label 'high' is not a number"),
    "finetune: random init without tokenizer": ("finetune", "`--model none` without `--tokenizer`",
        lambda s: ["finetune", "--model", "none", "--task", "custom", "--data",
                   s.folder("mine", {"train.csv": "review,stars\ngood,5\nbad,1\n", "dev.csv": "review,stars\nok,5\n"}),
                   "--text-column", "review", "--label-column", "stars", "--out", s.root / "r"], "needs --tokenizer"),
}

_STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


def _without_safetensors(s: Setup) -> Path:
    d = s.export("hf") / "discriminator"
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    return d


def _truncated_export(s: Setup) -> Path:
    d = s.export("hf") / "discriminator"
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return d


def _make_runs(root: Path) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(root / "reviews.txt")
    for name, extra in (("run", []), ("post_ln_run", POST_LN)):
        argv = ["pretrain", "--corpus", corpus, "--out", root / name, *TINY, "--max-steps", 2, *extra]
        assert main([str(a) for a in argv]) == 0
    return corpus, root / "run", root / "post_ln_run"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _make_runs(tmp_path_factory.mktemp("runs"))


def run_case(name: str, root: Path, runs, capsys) -> tuple[int, str, str]:
    setup = Setup(root, *runs)
    _, _, argv, _ = BAD_INPUTS[name]
    code = main([str(a) for a in argv(setup)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error(name, tmp_path, runs, capsys):
    before = {p.name for p in tmp_path.iterdir()}
    code, _, err = run_case(name, tmp_path, runs, capsys)
    assert code == 2
    assert err.startswith("electra: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert BAD_INPUTS[name][3] in err, err
    new = {p.name for p in tmp_path.iterdir()} - before
    assert not [n for n in new if n.startswith(".")], "no temporary file or folder left behind"
    assert not {"r", "t", "d"} & new, "no output written"
    if name == "pretrain: run directory taken":
        assert (tmp_path / "taken" / "keep.txt").read_text() == "x"


def test_the_reliability_doc_lists_every_case():
    doc = (Path(__file__).parents[1] / "docs" / "RELIABILITY.md").read_text()
    missing = [name for name in BAD_INPUTS if f"| {name} |" not in doc]
    assert not missing, f"docs/RELIABILITY.md lacks {missing}; regenerate with python -m tests.test_bad_input"


def _table() -> str:
    """The markdown table of docs/RELIABILITY.md, from running every case."""
    import tempfile

    class Capture:
        def readouterr(self):
            out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
            sys.stdout.seek(0), sys.stdout.truncate(), sys.stderr.seek(0), sys.stderr.truncate()
            return out, err

    import io
    rows = ["| case | command | bad input | message (exit code 2) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        real = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        try:
            runs = _make_runs(Path(tmp) / "runs")
            for i, (name, (command, what, _, _)) in enumerate(BAD_INPUTS.items()):
                root = Path(tmp) / f"case{i}"
                root.mkdir()
                Capture().readouterr()
                code, _, err = run_case(name, root, runs, Capture())
                message = err.strip().replace(str(root), "<dir>").replace(tmp, "<tmp>").replace("|", "\\|")
                rows.append(f"| {name} | `{command}` | {what} | {message} |")
        finally:
            sys.stdout, sys.stderr = real
    return "\n".join(rows)


if __name__ == "__main__":
    print(_table())

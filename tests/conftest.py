"""Shared fixtures: a synthetic corpus with real structure, its tokenizer and prepared shards."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest

import electra.train
from electra.cli import main
from electra.config import apply_overrides, preset_config
from electra.data import load_index, prepare_corpus
from electra.tokenizer import train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# CLI flags for a model small enough for tests (one layer of width 32, a 200-token vocabulary)
TINY = ["--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.intermediate_size=37",
        "--set", "model.embedding_size=24", "--set", "train.threads=1", "--seq-len", "32", "--batch-size", "8",
        "--vocab-size", "200", "--no-progress"]


def run_cli(capsys, *argv):
    """`electra ARGV...` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


SENTENCES = [
    "the film opens with a long shot of the harbour at night.",
    "my brother fell asleep before the second act began.",
    "every actor in the cast seems to enjoy the silly script.",
    "the music was written by a young composer from vienna.",
    "nobody expected the quiet detective to solve the case.",
    "critics praised the colours but hated the slow ending!",
    "why would anyone watch this twice?",
    "the sequel borrows its best jokes from the original.",
    "a stray dog follows the hero through the empty town.",
    "i laughed at the wrong moments, as usual.",
    "the director later said the budget ran out in week three.",
    "rain falls on the village for the whole of the last reel.",
]


def press_ctrl_c_in_step(monkeypatch, step: int):
    """Make pre-training raise SIGINT as step `step` (counted from 1) begins: that step finishes,
    the run checkpoints and stops. `monkeypatch.undo()` ends it."""
    train_step = electra.train.train_step

    def ctrl_c(t, lr):
        if t.step == step - 1:
            signal.raise_signal(signal.SIGINT)
        return train_step(t, lr)

    monkeypatch.setattr(electra.train, "train_step", ctrl_c)


def logged_without_timings(run: Path) -> list[dict]:
    """A run's metrics.jsonl records without their wall-clock fields, which no rerun repeats."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s")} for r in records]


def make_corpus(path: Path, documents: int = 300, seed: int = 0) -> Path:
    """Documents of 2-6 sentences drawn from a fixed set, one document per line (IMDB's layout):
    a model can learn every masked word from its sentence."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(SENTENCES).capitalize() for _ in range(rng.randint(2, 6)))
             for _ in range(documents)]
    path.write_text("\n".join(lines) + "\n")
    return path


def sst2_label(sentence: str) -> int:
    """The fixture sentences' sentiment: an exclamation or praise is positive."""
    return int("!" in sentence or "praised" in sentence)


def make_sst2(folder: Path, copies: int = 1) -> Path:
    """A small SST-2 folder in GLUE's TSV layout: the fixture sentences (`copies` times) as train and dev."""
    folder.mkdir(parents=True)
    rows = "".join(f"{s} \t{sst2_label(s)}\n" for s in SENTENCES * copies)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    (folder / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES)))
    return folder


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs the shared data set at {path} (../shared/data beside the repository)")
    return path


def tiny_config(data_dir, **overrides):
    """A model small enough for tests (seconds per dozens of steps), sized to `data_dir`'s vocabulary."""
    base = {
        "model.vocab_size": load_index(data_dir)["vocab_size"], "model.hidden_size": 32, "model.num_layers": 2,
        "model.num_heads": 2, "model.intermediate_size": 37, "model.embedding_size": 24,
        "model.max_position_embeddings": 64, "objective.generator_size": 0.5,
        "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 5, "train.max_steps": 10,
        "train.lr": 2e-3, "train.time_budget": "", "train.log_every": 5, "train.eval_every": 1000,
        "train.eval_batches": 2, "train.checkpoint_every": 1000, "train.threads": 1,
    }
    base.update(overrides)
    return apply_overrides(preset_config("tiny"), base)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "reviews.txt")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([corpus], out, vocab_size=200, show_progress=False)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare_corpus([corpus], tokenizer_dir, out, val_fraction=0.1, show_progress=False)
    return out

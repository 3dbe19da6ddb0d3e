"""torchrun on CPU (gloo): two processes train exactly what one does with the same global batch,
only rank 0 writes, and a resumed two-process run (or one resumed on one process) matches."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from electra.checkpoint import list_checkpoints
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built in")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, *args) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "electra"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "electra"]
    proc = subprocess.run([*cmd, "pretrain", "--no-progress", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def weights(run, step: int):
    return load_file(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def assert_same_records(a_run, b_run):
    """The same records in both runs' metrics.jsonl, their averaged metrics equal to rounding."""
    a_log, b_log = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
                    for run in (a_run, b_run))
    assert [(r["step"], r.get("split")) for r in a_log] == [(r["step"], r.get("split")) for r in b_log]
    for a, b in zip(a_log, b_log):
        for key in ("loss", "gen_accuracy", "disc_loss", "grad_norm", "disc_label_entropy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """The same 20 steps (global batch 8, dropout off) on one process and on two; the step-10
    checkpoint falls inside a log window (steps 9-12)."""
    root = tmp_path_factory.mktemp("ddp")
    config = root / "config.json"
    config.write_text(json.dumps(tiny_config(data_dir, **{
        "train.max_steps": 20, "train.batch_size": 8, "train.checkpoint_every": 10, "train.keep_checkpoints": 5,
        "train.log_every": 4, "model.dropout": 0.0, "model.attention_dropout": 0.0}).to_dict()))
    one, two = root / "one", root / "two"
    launch(1, "--data", data_dir, "--out", one, "--config", config)
    launch(2, "--data", data_dir, "--out", two, "--config", config)
    return one, two


def test_two_processes_with_accumulation_train_what_one_does(runs, tmp_path):
    """2 micro-batches per rank: the gradient all-reduce runs once, on the last (no_sync before)."""
    one, _ = runs
    accumulated = tmp_path / "accumulated"
    launch(2, "--data", json.loads((one / "run.json").read_text())["data_dir"],
           "--out", accumulated, "--config", one.parent / "config.json", "--set", "train.grad_accum=2")
    assert max_difference(weights(one, 20), weights(accumulated, 20)) < 1e-5


def test_two_processes_train_what_one_does(runs):
    one, two = runs
    assert max_difference(weights(one, 20), weights(two, 20)) < 1e-5
    assert_same_records(one, two)  # written once, by rank 0 only; the averages the single process's
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.parametrize("nproc", [2, 1])
def test_a_resumed_two_process_run_matches(runs, tmp_path, nproc):
    _, two = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    for ckpt in list_checkpoints(resumed):
        if int(ckpt.name[5:]) > 10:
            shutil.rmtree(ckpt)  # as if stopped right after step 10
    launch(nproc, "--out", resumed, "--resume")
    assert max_difference(weights(resumed, 20), weights(two, 20)) < 1e-5
    assert_same_records(two, resumed)  # the log window open at the checkpoint continued, on rank 0

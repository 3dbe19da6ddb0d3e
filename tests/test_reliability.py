"""Crashes, signals, numerical and disk faults: training loses at most the last checkpoint interval
and never corrupts what was saved."""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import electra.checkpoint
from electra.checkpoint import checkpoint_problem, latest_checkpoint, list_checkpoints, save_checkpoint
from electra.errors import UsageError
from electra.objective import Electra
from electra.train import pretrain
from tests.conftest import TINY, logged_without_timings, make_corpus, tiny_config


def final_weights(run) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run) / "model.safetensors")


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:3]


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "electra", "pretrain", "--no-progress", *map(str, args)]


def wait_for_checkpoint(run, at_least: int, proc, timeout: float = 60.0) -> bool:
    """Poll until RUN has a checkpoint of step >= at_least (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = list_checkpoints(run)
        if done and int(done[-1].name[5:]) >= at_least:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint of step {at_least} within {timeout} s")


def test_sigkill_at_three_random_points_then_resume_is_bit_exact(tmp_path, data_dir):
    steps = 40
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(data_dir, **{"train.max_steps": steps, "train.checkpoint_every": 1,
                                                          "train.keep_checkpoints": 2}).to_dict()))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(cli("--data", data_dir, "--out", reference, "--config", config), check=True, capture_output=True)

    kill_after = sorted(random.Random().sample(range(3, steps - 3), 3))  # a new draw every run
    first = ["--data", data_dir, "--out", killed, "--config", config]
    for i, step in enumerate(kill_after):
        proc = subprocess.Popen(cli(*(first if i == 0 else ["--out", killed, "--resume"])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_checkpoint(killed, step, proc)
        time.sleep(random.uniform(0, 0.05))  # anywhere in the next step or checkpoint write
        proc.kill()
        assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    subprocess.run(cli("--out", killed, "--resume"), check=True, capture_output=True)
    assert int(latest_checkpoint(killed).name[5:]) == steps
    assert_same_weights(final_weights(killed), final_weights(reference))
    # every record too, timings aside: a log window a kill cut through resumes from its checkpoint
    assert logged_without_timings(killed) == logged_without_timings(reference)


def test_sigterm_finishes_the_step_checkpoints_and_exits_0(tmp_path, data_dir):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(data_dir, **{"train.max_steps": 100_000,
                                                          "train.checkpoint_every": 1000}).to_dict()))
    run = tmp_path / "run"
    proc = subprocess.Popen(cli("--data", data_dir, "--out", run, "--config", config, "--set", "train.log_every=1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped by SIGTERM" in out and "--resume" in out
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and checkpoint_problem(ckpt) is None and 0 < int(ckpt.name[5:]) < 1000


def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, data_dir, capsys):
    cfg = tiny_config(data_dir, **{"train.max_steps": 8, "train.checkpoint_every": 2, "train.keep_checkpoints": 3})
    pretrain(cfg, tmp_path / "run", data_dir, show_progress=False)
    reference = final_weights(tmp_path / "run")
    ckpts = list_checkpoints(tmp_path / "run")
    assert [c.name for c in ckpts] == ["step-00000004", "step-00000006", "step-00000008"]
    electra.checkpoint.shutil.rmtree(ckpts[2])  # lost: as if the run died before step 8
    weights = ckpts[1] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep in a tensor
    weights.write_bytes(bytes(data))
    assert "SHA-256" in checkpoint_problem(ckpts[1])

    pretrain(cfg, tmp_path / "run", data_dir, resume=True, show_progress=False)
    out = capsys.readouterr()
    assert "checkpoint step-00000006 is damaged" in out.out + out.err
    assert_same_weights(final_weights(tmp_path / "run"), reference)  # redone from step 4


def test_non_finite_steps_are_skipped_and_a_run_of_them_stops(tmp_path, data_dir, monkeypatch):
    forward, calls = Electra.forward, {"n": 0}
    bad = set()

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        return out._replace(loss=out.loss * float("nan")) if calls["n"] in bad else out

    monkeypatch.setattr(Electra, "forward", poisoned)
    bad.update({3, 4})  # steps 3 and 4 (one micro-batch per step)
    cfg = tiny_config(data_dir, **{"train.max_steps": 8, "train.log_every": 4, "train.max_bad_steps": 3})
    pretrain(cfg, tmp_path / "run", data_dir, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("skipped_steps", 0) for r in records) == 2
    assert all(torch.isfinite(t).all() for t in final_weights(tmp_path / "run").values())

    calls["n"], bad = 0, set(range(5, 100))
    cfg = tiny_config(data_dir, **{"train.max_steps": 20, "train.checkpoint_every": 2, "train.max_bad_steps": 3})
    with pytest.raises(UsageError, match="3 steps in a row had a non-finite loss"):
        pretrain(cfg, tmp_path / "run2", data_dir, show_progress=False)
    ckpt = latest_checkpoint(tmp_path / "run2")
    assert ckpt.name == "step-00000004" and checkpoint_problem(ckpt) is None


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path, data_dir):
    cfg = tiny_config(data_dir)
    model = Electra(cfg.model, cfg.objective)
    good = save_checkpoint(tmp_path, 1, model)
    with torch.no_grad():
        model.discriminator.head.dense.weight[0, 0] = float("inf")
    with pytest.raises(UsageError, match="non-finite values in discriminator.head.dense.weight"):
        save_checkpoint(tmp_path, 2, model)
    assert list_checkpoints(tmp_path) == [good] and checkpoint_problem(good) is None


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, data_dir, monkeypatch):
    save_file = electra.checkpoint.save_file

    def disk_full_after_the_first_checkpoint(*args, **kwargs):
        if list_checkpoints(tmp_path / "run"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(electra.checkpoint, "save_file", disk_full_after_the_first_checkpoint)
    cfg = tiny_config(data_dir, **{"train.max_steps": 8, "train.checkpoint_every": 2})
    with pytest.raises(UsageError, match="No space left on device.*step-00000002 is intact.*--resume"):
        pretrain(cfg, tmp_path / "run", data_dir, show_progress=False)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000002"]  # no temporary folder left
    assert checkpoint_problem(root / "step-00000002") is None


def test_one_resume_command_rerun_after_sigkills_anywhere_ends_bit_identical(tmp_path):
    """A preemptible job reruns one command line until it finishes: `--resume` starts a run that has
    nothing to resume yet, and the end is the uninterrupted run's, whatever the kills interrupted."""
    corpus = make_corpus(tmp_path / "corpus.txt", documents=3000, seed=4)
    steps = 12

    def command(run):
        return cli("--corpus", corpus, "--out", run, "--resume", "--max-steps", steps, "--seed", 3, "--checkpoint-every",
                   2, "--set", "train.time_budget=", *TINY)

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(command(reference), check=True, capture_output=True)

    building = lambda: list(tmp_path.glob(".killed.tmp-*"))  # noqa: E731  (start_run's temporary folder)
    moments = {  # kill as soon as this holds
        "training the tokenizer": lambda: bool(building()),
        "preparing the data": lambda: any((b / "tokenizer.json").is_file() for b in building()),
        "set up, before the first checkpoint": lambda: (killed / "config.json").is_file(),
        "between checkpoints": lambda: len(list_checkpoints(killed)) > 0 and int(
            list_checkpoints(killed)[-1].name[5:]) >= random.choice([2, 4, 6]),
    }
    interrupted = []
    for moment, reached in moments.items():
        proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not reached() and proc.poll() is None:
            time.sleep(0.002)
        proc.kill()
        if proc.wait() == -signal.SIGKILL:
            interrupted.append(moment)
    assert len(interrupted) >= 3, interrupted  # each moment lasts long enough to be caught, mostly
    subprocess.run(command(killed), check=True, capture_output=True)
    assert not list(tmp_path.glob(".killed.*")), "no temporary folder left behind"
    for name in ("tokenizer.json", "data/index.json", "data/train-00000.tokens"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
    assert int(latest_checkpoint(killed).name[5:]) == steps
    assert_same_weights(final_weights(killed), final_weights(reference))
    # no record left over from a killed attempt, and the same records, timings aside (a checkpoint
    # carries the unfinished log window, so a record spanning a kill averages the same steps)
    assert logged_without_timings(killed) == logged_without_timings(reference)

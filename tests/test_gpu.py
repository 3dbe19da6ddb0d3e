"""CUDA paths (bf16 autocast training, detect on the GPU); skipped without a GPU.
Run with `python -m pytest -m gpu` on a GPU machine (scripts/gpu_check.sh does)."""

from __future__ import annotations

import json

import pytest
import torch

from electra.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_training_and_detect_on_cuda(tmp_path, corpus, capsys):
    from tests.conftest import TINY

    run = tmp_path / "run"
    assert main([str(a) for a in ["pretrain", "--corpus", corpus, "--out", run, "--max-steps", 6, "--device", "cuda",
                                  *TINY]]) == 0
    assert "cuda" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if "loss" in r)  # finite under bf16
    probs = {}
    for device in ("cpu", "cuda"):
        assert main(["detect", "--model", str(run), "--json", "--device", device, "a stray dog"]) == 0
        probs[device] = json.loads(capsys.readouterr().out)["token_probs"]
    assert probs["cuda"] == pytest.approx(probs["cpu"], abs=1e-3)

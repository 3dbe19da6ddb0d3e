"""The benchmark's accounting: FLOPs per token by hand, and the JSON a bench run prints."""

from __future__ import annotations

import json

import pytest

from electra.cli import main
from electra.config import apply_overrides, preset_config
from electra.flops import training_flops_per_token


def test_training_flops_per_token_by_hand():
    cfg = apply_overrides(preset_config("small"), {"data.seq_len": 128, "model.vocab_size": 1000})
    # discriminator: 12 layers of D=256, F=1024, T=128; projection 128 -> 256; head 256x256 + 256x1
    layer = 2 * 4 * 256 * 256 + 2 * 2 * 128 * 256 + 2 * 2 * 256 * 1024
    disc = 12 * layer + 2 * 128 * 256 + 2 * 256 * 256 + 2 * 256
    # generator: 1/4 width (D=64, F=256), same depth; vocabulary head at 19 of 128 positions
    g_layer = 2 * 4 * 64 * 64 + 2 * 2 * 128 * 64 + 2 * 2 * 64 * 256
    gen = 12 * g_layer + 2 * 128 * 64 + 19 / 128 * (2 * 64 * 128 + 2 * 128 * 1000)
    assert training_flops_per_token(cfg) == pytest.approx(3 * (disc + gen))
    multitask = apply_overrides(cfg, {"objective.disc_mlm_weight": 1.0})  # + the discriminator's vocabulary head
    assert training_flops_per_token(multitask) == pytest.approx(
        3 * (disc + gen + 19 / 128 * (2 * 256 * 128 + 2 * 128 * 1000)))
    mlm = apply_overrides(cfg, {"objective.kind": "mlm"})
    assert training_flops_per_token(mlm) == pytest.approx(
        3 * (12 * layer + 2 * 128 * 256 + 19 / 128 * (2 * 256 * 128 + 2 * 128 * 1000)))


@pytest.mark.parametrize("reference", [[], ["--reference", "hf"]])
def test_bench_prints_its_figures_as_json(capsys, reference):
    if reference:
        pytest.importorskip("transformers")
    argv = ["bench", "--preset", "tiny", "--vocab-size", "300", "--batch", "2", "--seq-len", "32", "--steps", "1",
            "--warmup", "1", "--threads", "1", "--json", "--set", "model.num_layers=1", *reference]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens_per_s"] == pytest.approx(2 * 32 / (r["ms_per_step"] / 1000))
    assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / r["matmul_peak_flops"])
    assert 0 < r["mfu"] < 1.5 and r["peak_memory_bytes"] > 0
    if reference:
        assert r["reference_tokens_per_s"] > 0 and r["speedup_vs_reference"] > 0

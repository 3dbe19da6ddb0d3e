"""Presets, config files and strict dotted overrides."""

from __future__ import annotations

import json

import pytest

from electra.config import Config, apply_overrides, generator_config, load_config_file, parse_duration, preset_config
from electra.errors import UsageError


def test_small_preset_is_the_official_electra_small():
    cfg = preset_config("small")
    m, t = cfg.model, cfg.train
    assert (m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size, m.embedding_size) == (12, 256, 4, 1024, 128)
    assert (t.batch_size, t.lr, t.warmup_steps, t.max_steps) == (128, 5e-4, 10_000, 1_000_000)
    assert cfg.data.seq_len == 128 and cfg.objective.disc_weight == 50 and cfg.objective.mask_prob == 0.15
    assert m.hf_compatible
    gen = generator_config(m, cfg.objective)
    assert (gen.hidden_size, gen.num_heads, gen.intermediate_size, gen.num_layers) == (64, 1, 256, 12)


def test_overrides_coerce_strings_and_reject_unknown_keys():
    cfg = apply_overrides(preset_config("tiny"), {"train.lr": "1e-3", "train.max_steps": "2e3",
                                                  "model.dropout": "0", "train.compile": "true"})
    assert cfg.train.lr == 1e-3 and cfg.train.max_steps == 2000 and cfg.model.dropout == 0.0
    assert cfg.train.compile is True
    with pytest.raises(UsageError, match="did you mean 'objective.mask_prob'"):
        apply_overrides(cfg, {"objective.mask_probability": "0.2"})
    with pytest.raises(UsageError, match="unknown config key 'optim.lr'"):
        apply_overrides(cfg, {"optim.lr": "0.2"})
    with pytest.raises(UsageError, match="expects int"):
        apply_overrides(cfg, {"train.max_steps": "1.5"})
    with pytest.raises(UsageError, match="divisible"):
        apply_overrides(cfg, {"model.num_heads": "3"})


def test_config_file_toml_and_json(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nhidden_size = 64\nnum_heads = 2\n[train]\nlr = 0.001\n')
    cfg = apply_overrides(preset_config("tiny"), load_config_file(toml))
    assert cfg.model.hidden_size == 64 and cfg.train.lr == 0.001
    saved = tmp_path / "c.json"
    saved.write_text(json.dumps(cfg.to_dict()))
    assert Config.from_dict(json.loads(saved.read_text())) == cfg
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config_file(bad)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("2h30m", 9000), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(UsageError, match="10m"):
        parse_duration("ten minutes")

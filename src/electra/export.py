"""Hugging Face format, both ways, without importing `transformers`.

`export_run` writes a run's checkpoint as two directories that `transformers` loads on its own:
`discriminator/` (`ElectraForPreTraining`) and `generator/` (`ElectraForMaskedLM`), each with
`config.json`, `model.safetensors` and the tokenizer (hf_tokenizer.py). A model in a layout HF's
ELECTRA cannot represent (the `tiny` preset's pre-LN blocks and ALiBi bias) goes out as MosaicBERT
ships ALiBi: `hf_remote/modeling_electra_cpu.py` beside `config.json`, with `auto_map`, for the Auto
classes with `trust_remote_code=True`. `import_hf` reads such directories back (weights only: it
never runs code from them) into a run directory that `electra pretrain --resume` continues and
`detect`/`evaluate` use.

Tensor names: `NAME_TABLE` maps ours to HF's (`{i}` a layer index, `{p}` weight or bias); the
inverse is derived from it. Loading is strict: a missing, unexpected or mis-shaped tensor is an
error naming it.

Special-token ids: our data and objective code keep [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4.
A vocabulary with them elsewhere (Google's BERT/ELECTRA vocab: 0, 100, 101, 102, 103) is permuted
on import: the tokenizer's ids and the rows of the word embeddings and of the generator's output
bias move together, so the imported model computes the same function of the text.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from electra.atomic import building_dir, require_empty_dir
from electra.checkpoint import save_checkpoint
from electra.config import Config, ModelConfig, generator_config, preset_config
from electra.errors import UsageError
from electra.hf_tokenizer import has_tokenizer, load_hf_tokenizer, write_hf_tokenizer
from electra.model import fold_word_delta
from electra.objective import Electra
from electra.rundir import CONFIG_FILE, RUN_FILE, load_run
from electra.tokenizer import PAD_ID, save_tokenizer

WEIGHTS_FILE = "model.safetensors"
REMOTE_CODE = Path(__file__).with_name("hf_remote") / "modeling_electra_cpu.py"
ROLES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}

_ENCODER = [
    ("encoder.embeddings.word_embeddings.weight", "electra.embeddings.word_embeddings.weight"),
    ("encoder.embeddings.position_embeddings.weight", "electra.embeddings.position_embeddings.weight"),
    ("encoder.embeddings.token_type_embeddings.weight", "electra.embeddings.token_type_embeddings.weight"),
    ("encoder.embeddings.norm.{p}", "electra.embeddings.LayerNorm.{p}"),
    ("encoder.embeddings_project.{p}", "electra.embeddings_project.{p}"),
    ("encoder.layers.{i}.attention.query.{p}", "electra.encoder.layer.{i}.attention.self.query.{p}"),
    ("encoder.layers.{i}.attention.key.{p}", "electra.encoder.layer.{i}.attention.self.key.{p}"),
    ("encoder.layers.{i}.attention.value.{p}", "electra.encoder.layer.{i}.attention.self.value.{p}"),
    ("encoder.layers.{i}.attention.output.{p}", "electra.encoder.layer.{i}.attention.output.dense.{p}"),
    ("encoder.layers.{i}.attention_norm.{p}", "electra.encoder.layer.{i}.attention.output.LayerNorm.{p}"),
    ("encoder.layers.{i}.intermediate.{p}", "electra.encoder.layer.{i}.intermediate.dense.{p}"),
    ("encoder.layers.{i}.output.{p}", "electra.encoder.layer.{i}.output.dense.{p}"),
    ("encoder.layers.{i}.ffn_norm.{p}", "electra.encoder.layer.{i}.output.LayerNorm.{p}"),
    ("encoder.final_norm.{p}", "electra.encoder.final_norm.{p}"),  # pre-LN only (modeling_electra_cpu.py)
]
# Ours (relative to the Discriminator / Generator module) -> HF's.
NAME_TABLE = {
    "discriminator": _ENCODER + [
        ("head.dense.{p}", "discriminator_predictions.dense.{p}"),
        ("head.prediction.{p}", "discriminator_predictions.dense_prediction.{p}"),
    ],
    "generator": _ENCODER + [
        ("head.dense.{p}", "generator_predictions.dense.{p}"),
        ("head.norm.{p}", "generator_predictions.LayerNorm.{p}"),
        ("head.bias", "generator_lm_head.bias"),
    ],
}
TIED = "head.word_embeddings.weight"  # the generator's decoder: the word embeddings themselves
HF_TIED = "generator_lm_head.weight"
HF_BUFFERS = ("electra.embeddings.position_ids", "electra.embeddings.token_type_ids")  # older HF saves


def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(rx)


_COMPILED = {role: [(_pattern(ours), ours, _pattern(hf), hf) for ours, hf in table]
             for role, table in NAME_TABLE.items()}


def hf_name(name: str, role: str) -> str | None:
    """Our tensor name -> HF's (None if the table has no entry)."""
    for rx, _, _, hf in _COMPILED[role]:
        m = rx.fullmatch(name)
        if m:
            return hf.format(**m.groupdict())
    return None


def our_name(name: str, role: str) -> str | None:
    """HF's tensor name -> ours: the inverse of `hf_name`, from the same table."""
    for _, ours, rx, _ in _COMPILED[role]:
        m = rx.fullmatch(name)
        if m:
            return ours.format(**m.groupdict())
    return None


def hf_config(m: ModelConfig, architecture: str) -> dict:
    return {
        "architectures": [architecture], "model_type": "electra",
        "vocab_size": m.vocab_size, "embedding_size": m.embedding_size, "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
        "intermediate_size": m.intermediate_size, "hidden_act": "gelu",
        "hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.attention_dropout,
        "max_position_embeddings": m.max_position_embeddings, "type_vocab_size": m.type_vocab_size,
        "initializer_range": m.initializer_range, "layer_norm_eps": m.layer_norm_eps,
        "position_embedding_type": "absolute", "pad_token_id": PAD_ID, "tie_word_embeddings": True,
        "dtype": "float32",
    }


def remote_code_config(config: dict, m: ModelConfig) -> dict:
    """An HF config for `modeling_electra_cpu.py` (pre-LN and/or ALiBi), loaded by the Auto classes
    with trust_remote_code=True. Its own model_type, so that nothing loads it as HF's ELECTRA."""
    module = REMOTE_CODE.stem
    role = {"ElectraForPreTraining": "ElectraCpuForPreTraining", "ElectraForMaskedLM": "ElectraCpuForMaskedLM"}
    return {**config, "model_type": "electra_cpu", "architectures": [role[config["architectures"][0]]],
            "norm_position": m.norm_position, "attention_bias": m.attention_bias, "alibi_slopes": m.alibi_slopes,
            "auto_map": {"AutoConfig": f"{module}.ElectraCpuConfig", "AutoModel": f"{module}.ElectraCpuModel",
                         "AutoModelForPreTraining": f"{module}.ElectraCpuForPreTraining",
                         "AutoModelForMaskedLM": f"{module}.ElectraCpuForMaskedLM",
                         "AutoModelForSequenceClassification": f"{module}.ElectraCpuForSequenceClassification"}}


# --------------------------------------------------------------------------- export

def export_run(run_dir, out_dir, step: int | None = None, force: bool = False) -> Path:
    """Write RUN's checkpoint (the latest, or `step`) as HF `discriminator/` and `generator/`."""
    out = Path(out_dir)
    if not force:
        require_empty_dir(out, "choose another --out, or pass --force to replace it")
    loaded = load_run(run_dir, step)
    cfg = loaded.cfg
    if cfg.objective.kind != "electra":
        raise UsageError("export writes ELECTRA runs; this run trained a masked LM (objective.kind=mlm)")
    shapes = {"discriminator": cfg.model, "generator": generator_config(cfg.model, cfg.objective)}
    modules = {"discriminator": loaded.model.discriminator, "generator": loaded.model.generator}
    with building_dir(out) as tmp:
        for role, architecture in ROLES.items():
            folder = tmp / role
            folder.mkdir()
            tensors = {}
            for name, tensor in fold_word_delta(modules[role].state_dict(), "encoder.").items():
                if name == TIED:
                    continue  # HF ties generator_lm_head.weight to the word embeddings on load
                target = hf_name(name, role)
                if target is None:
                    raise AssertionError(f"NAME_TABLE has no HF name for {role} tensor {name!r}")
                tensors[target] = tensor.detach().to("cpu", torch.float32).contiguous().clone()
            save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
            config = hf_config(shapes[role], architecture)
            if not cfg.model.hf_compatible:  # HF's ELECTRA cannot represent it: our model definition goes along
                config = remote_code_config(config, shapes[role])
                shutil.copyfile(REMOTE_CODE, folder / REMOTE_CODE.name)
            (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            write_hf_tokenizer(loaded.tokenizer, folder, cfg.model.max_position_embeddings, cfg.data.lowercase)
    return out


# --------------------------------------------------------------------------- import

def import_hf(hf_dir, run_dir, generator_dir=None, preset: str = "small") -> tuple[Config, list[str]]:
    """Make a run directory (config, tokenizer, a step-0 checkpoint) from HF ELECTRA weights.

    `hf_dir` is a discriminator directory, or an export with `discriminator/` and `generator/`.
    Without a generator, a fresh one (objective.generator_size of the width) is initialised.
    Returns the run's config and notes for the user."""
    hf = Path(hf_dir)
    disc_dir = hf / "discriminator" if (hf / "discriminator" / CONFIG_FILE).is_file() else hf
    if generator_dir is None and (hf / "generator" / CONFIG_FILE).is_file():
        generator_dir = hf / "generator"
    run = require_empty_dir(run_dir)
    notes = []

    gen_dir = Path(generator_dir) if generator_dir is not None else None
    cfg = config_from_hf(read_hf_config(disc_dir), read_hf_config(gen_dir) if gen_dir else None, preset)
    model_cfg, objective = cfg.model, cfg.objective
    if gen_dir is None:
        notes.append(f"no generator given: a new one ({objective.generator_size:g} of the width) starts "
                     "from random weights")

    tok, order = load_hf_tokenizer(disc_dir if has_tokenizer(disc_dir) else gen_dir or disc_dir)
    if tok.get_vocab_size() != model_cfg.vocab_size:
        raise UsageError(f"the tokenizer has {tok.get_vocab_size()} tokens but config.json says vocab_size "
                         f"{model_cfg.vocab_size}; give the tokenizer that belongs to the model")
    if order != list(range(len(order))):
        notes.append(f"special tokens moved to ids 0-4 (were {order[:5]}); embeddings permuted to match")

    torch.manual_seed(cfg.train.seed)
    model = Electra(cfg.model, cfg.objective)
    perm = torch.tensor(order)
    disc_tensors = read_hf_weights(disc_dir)
    _load_role(model.discriminator, "discriminator", disc_tensors, perm)
    if gen_dir is not None:
        gen_tensors = read_hf_weights(gen_dir)
        if any(not torch.equal(v, disc_tensors.get(k, torch.empty(0)))
               for k, v in gen_tensors.items() if k.startswith("electra.embeddings.")):
            notes.append("the generator's embeddings differ from the discriminator's; ELECTRA shares "
                         "them, so the discriminator's are used")
        _load_role(model.generator, "generator", gen_tensors, perm, skip_embeddings=True)

    with building_dir(run) as tmp:
        save_tokenizer(tok, tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
        (tmp / RUN_FILE).write_text(json.dumps({"imported_from": str(hf.resolve())}, indent=2))
        save_checkpoint(tmp, 0, model, None, {"elapsed": 0.0, "config": cfg.to_dict(),
                                              "imported_from": str(hf.resolve())})
    return cfg, notes


def config_from_hf(disc: dict, gen: dict | None, preset: str) -> Config:
    """Our config for HF ELECTRA configs: the architecture from theirs, training settings from
    `preset`, the generator's exact shape when one is given."""
    base = preset_config(preset)
    model = replace(
        base.model, vocab_size=disc["vocab_size"], hidden_size=disc["hidden_size"],
        num_layers=disc["num_hidden_layers"], num_heads=disc["num_attention_heads"],
        intermediate_size=disc["intermediate_size"],
        embedding_size=disc.get("embedding_size", disc["hidden_size"]),
        max_position_embeddings=disc["max_position_embeddings"],
        type_vocab_size=disc.get("type_vocab_size", 2), dropout=disc.get("hidden_dropout_prob", 0.1),
        attention_dropout=disc.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=disc.get("layer_norm_eps", 1e-12), initializer_range=disc.get("initializer_range", 0.02),
        norm_position=disc.get("norm_position", "post"), attention_bias=disc.get("attention_bias", "none"),
        alibi_slopes=disc.get("alibi_slopes", "steep"))
    objective = replace(base.objective, disc_bias_init="zero")
    if gen is not None:
        for key in ("vocab_size", "num_hidden_layers", "max_position_embeddings", "type_vocab_size"):
            if gen.get(key) != disc.get(key):
                raise UsageError(f"generator {key} ({gen.get(key)}) differs from the discriminator's "
                                 f"({disc.get(key)}); ELECTRA's generator shares its embeddings and depth")
        if gen.get("embedding_size", gen["hidden_size"]) != model.embedding_size:
            raise UsageError("the generator's embedding_size differs from the discriminator's; "
                             "ELECTRA's generator shares its embeddings")
        objective = replace(objective, generator_size=gen["hidden_size"] / model.hidden_size,
                            generator_num_heads=gen["num_attention_heads"],
                            generator_intermediate_size=gen["intermediate_size"])
    data = replace(base.data, vocab_size=model.vocab_size,
                   seq_len=min(base.data.seq_len, model.max_position_embeddings))
    return Config(model, objective, data, base.train)


def read_hf_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"no {CONFIG_FILE} in {str(folder)!r}; give a Hugging Face model directory")
    try:
        c = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{str(path)!r} is not valid JSON ({e})")
    if not isinstance(c, dict) or c.get("model_type") not in ("electra", "electra_cpu"):
        kind = c.get("model_type") if isinstance(c, dict) else None
        raise UsageError(f"{str(path)!r} is not an ELECTRA checkpoint (model_type {kind!r}); "
                         "give an ELECTRA discriminator or generator directory")
    if c.get("hidden_act", "gelu") != "gelu":
        raise UsageError(f"{str(path)!r}: hidden_act {c['hidden_act']!r} is not supported (only 'gelu')")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise UsageError(f"{str(path)!r}: position_embedding_type {c['position_embedding_type']!r} is "
                         "not supported (only 'absolute')")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings") if k not in c]
    if missing:
        raise UsageError(f"{str(path)!r} lacks {', '.join(missing)}")
    return c


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` (or its shards), with the `electra.` prefix of
    ElectraPreTrainedModel heads (a bare ElectraModel saves without it)."""
    index = folder / f"{WEIGHTS_FILE}.index.json"
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif index.is_file():
        try:
            files = [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (ValueError, KeyError) as e:
            raise UsageError(f"{str(index)!r} is not a valid shard index ({e})")
    elif any((folder / f).exists() for f in ("pytorch_model.bin", "model.bin")):
        raise UsageError(f"{str(folder)!r} has only pickle weights (pytorch_model.bin), which are never "
                         "loaded; resave them with save_pretrained(..., safe_serialization=True)")
    else:
        raise UsageError(f"no {WEIGHTS_FILE} in {str(folder)!r}")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (OSError, SafetensorError, ValueError) as e:
            raise UsageError(f"{str(f)!r} cannot be read ({str(e).splitlines()[0]}); it may be truncated")
    if not any(k.startswith("electra.") for k in tensors):
        tensors = {(f"electra.{k}" if k.split(".")[0] in ("embeddings", "encoder", "embeddings_project")
                    else k): v for k, v in tensors.items()}
    return tensors


def _load_role(module: torch.nn.Module, role: str, tensors: dict[str, torch.Tensor], perm: torch.Tensor,
               skip_embeddings: bool = False):
    """Strictly load HF tensors into our module, permuting vocabulary rows by `perm`."""
    expected = module.state_dict()
    wanted = {hf_name(k, role): k for k in expected if k != TIED}
    if skip_embeddings:
        wanted = {h: k for h, k in wanted.items() if not k.startswith("encoder.embeddings.")}
    word = "electra.embeddings.word_embeddings.weight"
    if HF_TIED in tensors and word in tensors and not torch.equal(tensors[HF_TIED], tensors[word]):
        raise UsageError(f"{HF_TIED} differs from the word embeddings; only tied generators are supported")
    ignored = set(HF_BUFFERS) | {HF_TIED}
    if skip_embeddings:
        ignored |= {k for k in tensors if k.startswith("electra.embeddings.")}
    unexpected = sorted(set(tensors) - set(wanted) - ignored)
    missing = sorted(set(wanted) - set(tensors))
    if missing or unexpected:
        what = [f"missing tensor {m!r}" for m in missing[:3]] + [f"unexpected tensor {u!r}" for u in unexpected[:3]]
        raise UsageError(f"the {role} weights do not match an ELECTRA {role} of this config.json: "
                         f"{'; '.join(what)}")
    state = {}
    for hf, ours in wanted.items():
        t = tensors[hf]
        if ours in ("encoder.embeddings.word_embeddings.weight", "head.bias") and t.shape[0] == len(perm):
            t = t[perm]
        if tuple(t.shape) != tuple(expected[ours].shape):
            raise UsageError(f"the {role} tensor {hf!r} has shape {tuple(t.shape)}, but config.json "
                             f"implies {tuple(expected[ours].shape)}")
        state[ours] = t.to(expected[ours].dtype)
    missing_here, _ = module.load_state_dict(state, strict=False)
    left = [k for k in missing_here if k != TIED and not (skip_embeddings and k.startswith("encoder.embeddings."))]
    assert not left, left

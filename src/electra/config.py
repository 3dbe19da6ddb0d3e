"""Typed configuration: one frozen dataclass per concern, presets, strict dotted overrides.

A run is described by `Config(model, objective, data, train)`. Presets (presets.py) give the
official sizes plus `tiny`, a model tuned to learn in minutes on a 2-core CPU. Overrides use the names HF users know
(`model.hidden_size`, `train.lr`, ...); an unknown key is an error with a close-match suggestion,
as the official `update()` rejects unknown hyperparameters.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from electra.errors import UsageError
from electra.presets import PRESETS


@dataclass(frozen=True)
class ModelConfig:
    """The discriminator's encoder; the generator derives from it (see `generator_config`)."""

    vocab_size: int = 30522
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    embedding_size: int = 128
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Deviations from HF's layout (see docs/LOG.md); a model using them is exported with its own
    # model code (hf_remote/modeling_electra_cpu.py, loaded with trust_remote_code=True).
    norm_position: str = "post"  # "post" (HF/BERT) or "pre" (final LayerNorm added)
    attention_bias: str = "none"  # "none" or "alibi" (per-head linear distance penalty)
    # "steep": 2^(-8h/max(H, 8)); "standard": 2^(-8h/H) (Press et al. 2022); "steep-global": "steep"
    # with the last of two or more heads near-global (2^-8)
    alibi_slopes: str = "steep"
    position_init: str = "normal"  # "normal" N(0, initializer_range), or "sinusoidal" at that scale
    # "normal" N(0, initializer_range), or "ppmi-svd": pre-training starts the word embeddings from the
    # training corpus's count-based vectors (electra.word_vectors), rows of unit length
    word_init: str = "normal"

    def __post_init__(self):
        _check_positive(self, "vocab_size", "hidden_size", "num_layers", "num_heads",
                        "intermediate_size", "embedding_size", "max_position_embeddings")
        if self.hidden_size % self.num_heads:
            raise UsageError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.num_heads ({self.num_heads})")
        _check_choice(self, "norm_position", ("post", "pre"))
        _check_choice(self, "attention_bias", ("none", "alibi"))
        _check_choice(self, "alibi_slopes", ("steep", "standard", "steep-global"))
        _check_choice(self, "position_init", ("normal", "sinusoidal"))
        _check_choice(self, "word_init", ("normal", "ppmi-svd"))
        _check_fraction(self, "dropout", "attention_dropout")

    @property
    def hf_compatible(self) -> bool:
        return self.norm_position == "post" and self.attention_bias == "none"


@dataclass(frozen=True)
class ObjectiveConfig:
    """Replaced-token detection (paper section 2); defaults are the official ones."""

    mask_prob: float = 0.15
    mask_token_prob: float = 0.85  # of the chosen positions, the share set to [MASK]; the rest keep the token
    max_predictions: int = 0  # per sequence; 0 = int((mask_prob + 0.005) * seq_len), as the official code
    generator_size: float = 0.25  # generator width as a fraction of the discriminator's
    # 0 = derived from generator_size (official); set when importing a generator of another shape
    generator_num_heads: int = 0
    generator_intermediate_size: int = 0
    gen_weight: float = 1.0
    disc_weight: float = 50.0
    temperature: float = 1.0
    # > 0: the discriminator also predicts the original token at the chosen positions from its own
    # (corrupted) input, a corrective LM loss of this weight beside RTD (multi-task; not in the
    # paper; its head is not exported)
    disc_mlm_weight: float = 0.0
    # with disc_mlm_weight: of the positions the generator saw as [MASK], this share stays [MASK] in
    # the discriminator's input while training (a masked LM's own task for its vocabulary head; RTD
    # labels them replaced, as they are), the rest get the generator's samples (not in the paper)
    disc_mask_share: float = 0.0
    # "shared": one embedding table for both (official); "gdes": the discriminator adds its own
    # delta to the shared word vectors, which its loss does not update (DeBERTa-V3)
    embedding_sharing: str = "shared"
    # Start the discriminator's output bias at logit(mask_prob) instead of 0 (measured to prevent an
    # early collapse to a constant predictor on small CPU models; see docs/LOG.md).
    disc_bias_init: str = "zero"  # "zero" or "base_rate"
    # Which tokens the RTD loss scores: "all" real tokens (official), or "maskable" ones only, leaving
    # out [CLS] and [SEP], which are never replaced, so the loss does not train them toward a constant
    rtd_tokens: str = "all"
    # "electra", or "mlm": BERT's masked LM at the discriminator's size (80% [MASK], 10% random,
    # 10% kept), the baseline of the paper's comparison
    kind: str = "electra"
    random_token_prob: float = 0.1  # mlm only: of the chosen positions, the share given a random token
    # Choose whole words: every piece of a chosen word is chosen with it (BERT's whole-word masking;
    # not in the official ELECTRA code). Measured: it does not teach the discriminator to find a
    # word of several pieces replaced as a whole (docs/LOG.md, ninth round).
    whole_word: bool = False
    # In training, this share of the words also takes the pieces of another word of as many pieces
    # from the same sequence (the text's own word distribution): the whole-word substitutions that
    # the generator, sampling one piece at a time, never makes, so that the discriminator learns to
    # judge a word of several pieces by its context (not in the paper; docs/LOG.md, ninth round).
    # Measured with 0.05 (tenth round): it finds one-piece replaced words more often (replaced_top1
    # 40.8% against 34.3% at 30 minutes), not yet the several-piece ones (still near chance)
    word_swap_prob: float = 0.0
    # Where a swapped word's donor comes from: "sequence" (a word of the same sequence, above), or
    # "corpus": a word of as many pieces drawn from the whole corpus's word counts (the first
    # shards), the substitution a wrong word from elsewhere makes. Measured with 0.05 (eleventh
    # round): replaced_top1 41.9% / 40.2% at 30 minutes (sequence donors 40.8%); words of several
    # pieces still near chance, even in the training domain
    word_swap_source: str = "sequence"

    def __post_init__(self):
        _check_fraction(self, "mask_prob", "mask_token_prob")
        if not 0 < self.mask_prob < 1:
            raise UsageError("objective.mask_prob must be between 0 and 1 (exclusive)")
        if not 0 < self.generator_size <= 1:
            raise UsageError("objective.generator_size must be in (0, 1]")
        if min(self.max_predictions, self.generator_num_heads, self.generator_intermediate_size) < 0:
            raise UsageError("objective.max_predictions, generator_num_heads and "
                             "generator_intermediate_size must be >= 0 (0 = derived)")
        if self.temperature <= 0:
            raise UsageError("objective.temperature must be > 0")
        if self.disc_mlm_weight < 0:
            raise UsageError("objective.disc_mlm_weight must be >= 0")
        _check_fraction(self, "disc_mask_share")
        if self.disc_mask_share > 0 and self.disc_mlm_weight == 0:
            raise UsageError("objective.disc_mask_share needs objective.disc_mlm_weight > 0 "
                             "(the discriminator's [MASK] positions train only its masked-LM head)")
        _check_choice(self, "disc_bias_init", ("zero", "base_rate"))
        _check_choice(self, "embedding_sharing", ("shared", "gdes"))
        _check_choice(self, "rtd_tokens", ("all", "maskable"))
        _check_choice(self, "kind", ("electra", "mlm"))
        _check_fraction(self, "random_token_prob", "word_swap_prob")
        _check_choice(self, "word_swap_source", ("sequence", "corpus"))
        if self.word_swap_source != "sequence" and self.word_swap_prob == 0:
            raise UsageError("objective.word_swap_source chooses the donors of word swaps: set "
                             "objective.word_swap_prob > 0 too")

    def predictions_per_sequence(self, seq_len: int) -> int:
        n = self.max_predictions or int((self.mask_prob + 0.005) * seq_len)
        return max(1, min(n, seq_len))


@dataclass(frozen=True)
class DataConfig:
    """Tokenizer training, corpus preparation and example building."""

    seq_len: int = 128
    vocab_size: int = 30522  # tokenizer vocabulary when `pretrain` trains one; 0: by the corpus's size
    lowercase: bool = True
    normalization: str = "nfkc"  # "nfkc", "nfc", "nfd", "nfkd" or "none"
    doc_sep: str = "line"  # "line": one document per line; "blank": blank lines separate them
    single_segment_prob: float = 0.1  # share of examples with one segment, as the official builder
    val_fraction: float = 0.005  # every 1/val_fraction-th document goes to the validation split
    val_max_tokens: int = 200_000

    def __post_init__(self):
        _check_positive(self, "val_max_tokens")
        if self.vocab_size < 0:
            raise UsageError(f"data.vocab_size must be >= 0 (0: by the corpus's size), got {self.vocab_size}")
        if self.seq_len < 8:
            raise UsageError(f"data.seq_len must be at least 8, got {self.seq_len}")
        _check_choice(self, "normalization", ("nfkc", "nfc", "nfd", "nfkd", "none"))
        _check_choice(self, "doc_sep", ("line", "blank"))
        _check_fraction(self, "single_segment_prob", "val_fraction")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # global batch per optimizer step
    grad_accum: int = 1  # micro-batches per step (each batch_size // grad_accum)
    lr: float = 5e-4
    warmup_steps: int = 10_000
    max_steps: int = 1_000_000
    time_budget: str = ""  # e.g. "10m", "2h"; the LR schedule then decays to zero at the deadline
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    clip_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16", "fp16"
    compile: bool = False
    device: str = "auto"
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    log_every: int = 20
    eval_every: int = 500
    eval_batches: int = 20
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    max_bad_steps: int = 10  # consecutive steps with a non-finite loss or gradient (skipped) before stopping
    # the word embeddings' lr as a share of the rest's: 0 keeps them where they started (with
    # model.word_init "ppmi-svd", the corpus's own vectors)
    word_lr_scale: float = 1.0

    def __post_init__(self):
        if self.word_lr_scale < 0:
            raise UsageError(f"train.word_lr_scale must be >= 0, got {self.word_lr_scale}")
        _check_positive(self, "batch_size", "grad_accum", "warmup_steps", "max_steps",
                        "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps")
        if self.batch_size % self.grad_accum:
            raise UsageError(f"train.batch_size ({self.batch_size}) must be divisible by "
                             f"train.grad_accum ({self.grad_accum})")
        if self.lr <= 0:
            raise UsageError(f"train.lr must be > 0, got {self.lr}")
        _check_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        if self.time_budget:
            parse_duration(self.time_budget)

    @property
    def time_budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget) if self.time_budget else None


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.data.seq_len > self.model.max_position_embeddings:
            raise UsageError(f"data.seq_len ({self.data.seq_len}) exceeds "
                             f"model.max_position_embeddings ({self.model.max_position_embeddings})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return apply_overrides(cls(), _flatten(d))


def generator_config(disc: ModelConfig, objective: "ObjectiveConfig") -> ModelConfig:
    """The generator: same depth, `generator_size` of the width (official `get_generator_config`),
    unless its heads / feed-forward size are given explicitly (an imported generator)."""
    size = objective.generator_size
    hidden = max(1, int(round(disc.hidden_size * size)))
    heads = objective.generator_num_heads or max(1, int(round(disc.num_heads * size)))
    if objective.generator_num_heads == 0:
        while hidden % heads:
            heads -= 1
    elif hidden % heads:
        raise UsageError(f"the generator's hidden size ({hidden}) is not divisible by "
                         f"objective.generator_num_heads ({heads})")
    intermediate = (objective.generator_intermediate_size
                    or max(1, int(round(disc.intermediate_size * size))))
    return replace(disc, hidden_size=hidden, num_heads=heads, intermediate_size=intermediate)


# --------------------------------------------------------------------------- presets

def preset_config(name: str) -> Config:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; "
                         f"choose one of {', '.join(PRESETS)}")
    return apply_overrides(Config(), PRESETS[name])


# --------------------------------------------------------------------------- overrides

def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return `cfg` with dotted keys (`section.field`) replaced; values may be strings from a CLI."""
    sections = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    changes: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in sections or not name:
            all_keys = [f"{s}.{f.name}" for s, sub in sections.items() for f in fields(sub)]
            raise UsageError(f"unknown config key {key!r}{_suggest(key, all_keys)}")
        sub_fields = {f.name: f for f in fields(sections[section])}
        if name not in sub_fields:
            keys = [f"{section}.{n}" for n in sub_fields]
            raise UsageError(f"unknown config key {key!r}{_suggest(key, keys)}")
        changes[section][name] = _coerce(key, value, type(getattr(sections[section], name)))
    try:
        new_sections = {s: replace(sub, **changes[s]) for s, sub in sections.items()}
    except TypeError as e:  # a frozen dataclass rejects nothing else, but keep the message clean
        raise UsageError(str(e)) from e
    return Config(**new_sections)


def parse_set_args(items: list[str]) -> dict[str, str]:
    """`["train.lr=1e-3", ...]` -> {"train.lr": "1e-3"}."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set train.lr=1e-3), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_config_file(path: Path) -> dict[str, Any]:
    """A TOML or JSON file with sections `model`, `objective`, `data`, `train` -> flat dotted dict."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} does not exist or is not a file")
    text = path.read_bytes()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {str(path)!r} is not valid {path.suffix[1:].upper() or 'TOML'}: {e}")
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(path)!r} must hold a table of sections")
    return _flatten(data)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _coerce(key: str, value: Any, typ: type) -> Any:
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if typ is int:
                number = float(text)  # accepts 1e6
                if not number.is_integer():
                    raise ValueError
                return int(number)
            if typ is float:
                return float(text)
        except ValueError:
            raise UsageError(f"config key {key!r} expects {typ.__name__}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise UsageError(f"config key {key!r} expects {typ.__name__}, got {value!r}")
    return value


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '2h30m' or plain seconds -> seconds."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
    if not parts or "".join(a + b for a, b in parts) != s.replace(" ", ""):
        raise UsageError(f"cannot read the duration {text!r}; write it like 90s, 10m, 1.5h or 2h30m")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_positive(obj, *names):
    for n in names:
        if getattr(obj, n) <= 0:
            raise UsageError(f"{_section(obj)}.{n} must be > 0, got {getattr(obj, n)}")


def _check_fraction(obj, *names):
    for n in names:
        if not 0 <= getattr(obj, n) <= 1:
            raise UsageError(f"{_section(obj)}.{n} must be between 0 and 1, got {getattr(obj, n)}")


def _check_choice(obj, name, choices):
    if getattr(obj, name) not in choices:
        raise UsageError(f"{_section(obj)}.{name} must be one of {', '.join(choices)}; "
                         f"got {getattr(obj, name)!r}")


def _section(obj) -> str:
    return type(obj).__name__.replace("Config", "").lower()

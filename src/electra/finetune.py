"""Fine-tuning the pre-trained discriminator on a classification or regression task.

The official ELECTRA recipe (`run_finetuning.py`): a head of dropout + one linear layer on the
`[CLS]` vector; AdamW (weight decay 0.01, none on biases and LayerNorm) with linear warmup over 10%
of the steps and linear decay to zero; layer-wise learning-rate decay, lr * decay^(L + 2 - depth)
with depth 0 for the embeddings, l + 1 for layer l and L + 2 for the head; batch 32, length 128,
3 epochs (10 for RTE and STS-B); MRPC and STS-B train on both sentence orders. Several seeds give
the median the paper reports. `--model none` trains the same architecture from random weights.
Departures, for CPU-scale models and small training sets: PRESET_LAYER_DECAY and MIN_STEPS; and
batches of near-equal lengths (FinetuneConfig.batching), for speed.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from electra.atomic import building_dir, require_empty_dir
from electra.config import ModelConfig, preset_config
from electra.errors import UsageError
from electra.model import Encoder, fold_word_delta, init_positions, init_weights
from electra.optim import lr_at
from electra.rundir import load_run
from electra.runtime import resolve_device, set_cpu_threads
from electra.tasks import Example, TaskData, TaskSpec, task_metrics
from electra.data import pad_batch
from electra.tokenizer import TOKENIZER_FILE, load_tokenizer

# Official for small / base / large; `tiny` measured on SST-2 (docs/LOG.md): 1e-3 beat 3e-4.
PRESET_LR = {"tiny": 1e-3, "small": 3e-4, "base": 1e-4, "large": 5e-5}
# The official 0.8 assumes lower layers that already hold what the task needs; after CPU-scale
# pre-training they do not, and 0.8 cost every `tiny` encoder on SST-2 (docs/LOG.md: full SST-2
# +0.5 to +6.9 points with 1.0; SST-2-1k +5 to +9 with 1.0 and the step floor below).
PRESET_LAYER_DECAY = {"tiny": 1.0}
# The task's epochs (3 for most) assume thousands of examples; on a small training set they are a
# few dozen optimizer steps and leave every encoder at the majority class (SST-2-1k: 94 steps).
# Small sets get whole epochs up to this many steps; GLUE's tasks as they are all have more.
MIN_STEPS = 300
# RTD never replaces [CLS], so CPU-scale pre-training leaves it holding little of the sentence; on a
# small training set the classifier reads more from the mean of the real tokens' vectors. `tiny` on
# SST-2, paired runs (docs/LOG.md): +5.3 points with 1,000 examples, +1.7 to +2.1 with 2,000-10,000,
# +0.5 with 20,000; a wash at 40,000 (+0.2) and -0.25 with all 67,349. Sets up to this size get mean
# pooling; larger ones, and larger models (which this was not measured on), the official [CLS].
PRESET_MEAN_POOLING_MAX_EXAMPLES = {"tiny": 20_000}


@dataclass(frozen=True)
class FinetuneConfig:
    lr: float | None = None  # None: by model size, PRESET_LR
    batch_size: int = 32
    epochs: int | None = None  # None: the task's (3; 10 for RTE and STS-B), or more to reach MIN_STEPS
    max_length: int | None = None  # None: 128, or the model's positions if it has fewer
    layer_decay: float | None = None  # None: by model size, PRESET_LAYER_DECAY (else the official 0.8)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1  # before the classifier
    clip_norm: float = 1.0
    # what the classifier reads: "cls" (official) or "mean" (of the real tokens); None: by model size
    # and training set size, PRESET_MEAN_POOLING_MAX_EXAMPLES
    pooling: str | None = None
    reinit_layers: int = 0  # the top encoder layers re-initialised before fine-tuning (Zhang et al. 2021)
    encoder_dropout: float | None = None  # the encoder's dropout while fine-tuning; None: the model's own
    # the embeddings' lr as a fraction of what layer_decay gives them; 0 freezes them. None: 0 for a
    # run whose word vectors pre-training kept fixed (train.word_lr_scale 0: the corpus's PPMI-SVD
    # vectors, which fine-tuning on a small set would otherwise pull apart: words seen in training
    # leave the space of those only dev has; SST-2-1k +4.8 points, docs/LOG.md), else 1 (frozen
    # learned embeddings measured far worse)
    embedding_lr_scale: float | None = None
    # how an epoch is cut into batches: "length" (examples of about the same length together, the
    # batches in random order: far less padding, SST-2 1.8x faster, results the same; docs/LOG.md) or
    # "random" (a permutation cut in order, the official recipe)
    batching: str = "length"

    def __post_init__(self):
        if ((self.lr is not None and self.lr <= 0) or self.batch_size < 1 or (self.epochs is not None and self.epochs < 1)
                or (self.max_length is not None and self.max_length < 8)):
            raise UsageError("fine-tuning needs lr > 0, batch size >= 1, epochs >= 1 and max length >= 8")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise UsageError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.batching not in ("random", "length"):
            raise UsageError(f"fine-tuning batching must be random or length, got {self.batching!r}")
        if self.pooling not in (None, "cls", "mean"):
            raise UsageError(f"fine-tuning pooling must be cls or mean, got {self.pooling!r}")
        if self.reinit_layers < 0 or not 0 <= (self.encoder_dropout or 0) < 1 or (self.embedding_lr_scale or 0) < 0:
            raise UsageError("fine-tuning reinit_layers and embedding_lr_scale must be >= 0 and encoder_dropout in [0, 1)")


@dataclass
class StartingPoint:
    """What fine-tuning starts from: a pre-trained encoder, or (encoder_state None) the same
    architecture from random weights."""

    tokenizer: object
    model_cfg: ModelConfig
    encoder_state: dict | None
    size: str  # the preset whose fine-tuning lr fits this model's size
    source: str  # how reports name it
    fixed_word_vectors: bool = False  # pre-training kept its (corpus) word vectors fixed


def starting_point(model: str, step: int | None = None, tokenizer: str | None = None,
                   preset: str = "tiny") -> StartingPoint:
    """A run's discriminator (or masked LM) encoder, at its latest checkpoint or `step`; or, for
    `model` "none", the `preset` architecture from random weights with `tokenizer`'s vocabulary."""
    if model == "none":
        if not tokenizer:
            raise UsageError("--model none needs --tokenizer DIR (a run or a tokenizer folder) for its vocabulary")
        tok = load_tokenizer(tokenizer)
        model_cfg = replace(preset_config(preset).model, vocab_size=tok.get_vocab_size())
        return StartingPoint(tok, model_cfg, None, preset, f"none (random {preset})")
    loaded = load_run(model, step)
    m = loaded.cfg.model
    size = ("large" if m.hidden_size >= 1024 else "base" if m.hidden_size >= 768
            else "small" if m.hidden_size >= 256 else "tiny")
    return StartingPoint(loaded.tokenizer, m, fold_word_delta(loaded.model.encoder.state_dict()), size,
                         f"{model} step {loaded.step}", fixed_word_vectors=loaded.cfg.train.word_lr_scale == 0)


class Classifier(nn.Module):
    """The discriminator's encoder with dropout + a linear layer on [CLS] (or on the mean of the
    real tokens' vectors)."""

    def __init__(self, model_cfg: ModelConfig, num_outputs: int, dropout: float, pooling: str = "cls"):
        super().__init__()
        self.encoder = Encoder(model_cfg)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(model_cfg.hidden_size, num_outputs)
        self.pooling = pooling

    def forward(self, input_ids, token_type_ids, attention_mask):  # -> (B, outputs)
        hidden = self.encoder(input_ids, token_type_ids, attention_mask)  # (B, T, D)
        if self.pooling == "mean":
            weights = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            pooled = hidden[:, 0]
        return self.head(self.dropout(pooled))


def parameter_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings (and their projection), l + 1 for layer l, L + 1 for the final
    LayerNorm of a pre-LN model, L + 2 for the task head."""
    if name.startswith("encoder.layers."):
        return int(name.split(".")[2]) + 1
    if name.startswith("encoder.final_norm."):
        return num_layers + 1
    if name.startswith("encoder."):
        return 0
    return num_layers + 2


def layerwise_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict]:
    """AdamW parameter groups: lr * layer_decay^(L + 2 - depth) (times embedding_lr_scale at depth 0);
    no weight decay on vectors. Frozen parameters (build_classifier's, at scale 0) are left out."""
    L = model.encoder.cfg.num_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth, decay = parameter_depth(name, L), p.ndim >= 2
        scale = cfg.embedding_lr_scale if depth == 0 and cfg.embedding_lr_scale is not None else 1.0
        group = groups.setdefault((depth, decay), {
            "params": [], "names": [], "base_lr": cfg.lr * scale * cfg.layer_decay ** (L + 2 - depth),
            "weight_decay": cfg.weight_decay if decay else 0.0})
        group["params"].append(p)
        group["names"].append(name)
    return [dict(g, lr=g["base_lr"]) for g in groups.values()]


@dataclass
class Encoded:
    ids: list[list[int]]
    types: list[list[int]]
    labels: torch.Tensor | None


def encode(tokenizer, examples: list[Example], spec: TaskSpec, max_length: int, swap: bool = False) -> Encoded:
    """Token ids of (text, pair) examples, truncated longest-first to max_length; with `swap`, each
    pair also appears in the other order (official for MRPC and STS-B)."""
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    tokenizer.no_padding()
    if swap:
        examples = examples + [Example(e.pair, e.text, e.label, e.index) for e in examples]
    inputs = [(e.text, e.pair) if e.pair is not None else e.text for e in examples]
    encodings = tokenizer.encode_batch(inputs)
    labels = None
    if examples and examples[0].label is not None:
        labels = torch.tensor([e.label for e in examples], dtype=torch.float32 if spec.regression else torch.long)
    return Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], labels)


def padded_batch(data: Encoded, rows, device):
    """(ids, token types, attention mask) of `rows`, padded to the longest of them."""
    return pad_batch([data.ids[i] for i in rows], [data.types[i] for i in rows], device)


@torch.no_grad()
def predict(model: Classifier, data: Encoded, spec: TaskSpec, device, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    out = []
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))  # less padding
    for k in range(0, len(order), batch_size):
        rows = order[k:k + batch_size]
        logits = model(*padded_batch(data, rows, device)).float().cpu()
        out.append(logits[:, 0] if spec.regression else logits.argmax(-1))
    flat = torch.cat(out) if out else torch.empty(0)
    result = torch.empty_like(flat)
    result[torch.tensor(order, dtype=torch.long)] = flat
    model.train()
    return result


def build_classifier(spec: TaskSpec, cfg: FinetuneConfig, model_cfg: ModelConfig, encoder_state: dict | None):
    """The classifier as fine-tuning starts it: the pre-trained encoder (its top `reinit_layers`
    layers drawn afresh) or random weights, with the fine-tuning dropout; the embeddings frozen
    when embedding_lr_scale is 0."""
    if cfg.encoder_dropout is not None:
        model_cfg = replace(model_cfg, dropout=cfg.encoder_dropout, attention_dropout=cfg.encoder_dropout)
    model = Classifier(model_cfg, spec.num_outputs, cfg.dropout, cfg.pooling or "cls")
    init_weights(model, model_cfg.initializer_range)
    init_positions(model.encoder.embeddings, model_cfg)  # a random start as pre-training's
    if encoder_state is not None:
        model.encoder.load_state_dict(encoder_state)
        for layer in model.encoder.layers[len(model.encoder.layers) - cfg.reinit_layers:]:
            init_weights(layer, model_cfg.initializer_range)
    if cfg.embedding_lr_scale == 0:  # frozen: no lr, and no gradient computed for them
        for name, p in model.named_parameters():
            if parameter_depth(name, model_cfg.num_layers) == 0:
                p.requires_grad_(False)
    return model


def train_one_seed(spec: TaskSpec, cfg: FinetuneConfig, model_cfg: ModelConfig, encoder_state: dict | None,
                   train: Encoded, dev: Encoded, seed: int, device, show_progress: bool = True, log=print):
    """One fine-tuning run; returns the model and the dev metrics after each epoch."""
    torch.manual_seed(seed)
    model = build_classifier(spec, cfg, model_cfg, encoder_state).to(device).train()
    optimizer = torch.optim.AdamW(layerwise_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6)
    n = len(train.ids)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_fraction * total))
    g = torch.Generator().manual_seed(seed)
    history, step = [], 0
    for epoch in range(cfg.epochs):
        batches = epoch_batches(train.ids, cfg.batch_size, g, cfg.batching)
        bar = tqdm(batches, desc=f"seed {seed} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not show_progress, dynamic_ncols=True, leave=False)
        for k, rows in enumerate(bar):
            factor = lr_at(step, 1.0, warmup, step / total)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            out = model(*padded_batch(train, rows, device))
            target = train.labels[rows].to(device)
            loss = F.mse_loss(out[:, 0].float(), target) if spec.regression else F.cross_entropy(out.float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if k % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        metrics = task_metrics(spec, dev.labels.numpy(), predict(model, dev, spec, device).numpy())
        history.append(metrics)
        log(f"seed {seed} epoch {epoch + 1}: dev " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return model, history


def epoch_batches(ids: list, batch_size: int, g: torch.Generator, batching: str) -> list[list[int]]:
    """One epoch's batches (row indices), ceil(n / batch_size) of them, from one permutation drawn
    with `g`. "length": the permutation is taken 50 batches at a time, sorted by length and cut, and
    the batches are then shuffled: each is still a random draw, but of near-equal lengths, so little
    is padding (SST-2's training set, 0.96 M tokens: 2.9 M an epoch padded at random, 1.0 M so)."""
    n = len(ids)
    order = torch.randperm(n, generator=g).tolist()
    if batching == "random":
        return [order[k:k + batch_size] for k in range(0, n, batch_size)]
    group = 50 * batch_size  # whole batches: only the epoch's last can be short
    batches = []
    for start in range(0, n, group):
        rows = sorted(order[start:start + group], key=lambda i: len(ids[i]))
        batches += [rows[k:k + batch_size] for k in range(0, len(rows), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def finetune(spec: TaskSpec, task: TaskData, cfg: FinetuneConfig, start: StartingPoint, out_dir,
             seeds=(1,), device="cpu", show_progress: bool = True, overwrite: bool = False) -> dict:
    """Fine-tune once per seed, report each and the median / mean / std of the main metric (in
    percent), and save the best seed's model, config and dev / test predictions in `out_dir`
    (with `overwrite`, in place of what it holds, once the new results are complete).
    The config's unset values become the model size's and the task's (`resolved`)."""
    out = Path(out_dir) if overwrite else require_empty_dir(out_dir)
    positions = start.model_cfg.max_position_embeddings
    max_length = cfg.max_length or min(128, positions)
    if max_length > positions:
        raise UsageError(f"--max-length {max_length} exceeds the model's "
                         f"{start.model_cfg.max_position_embeddings} positions")
    set_cpu_threads()  # flush denormals, as pre-training does
    device = resolve_device(device)
    tokenizer = start.tokenizer
    train = encode(tokenizer, task.train, spec, max_length, swap=spec.swap_pairs)
    cfg = resolved(cfg, spec, start.size, len(train.ids), max_length, start.fixed_word_vectors)
    dev = encode(tokenizer, task.dev, spec, cfg.max_length)
    test = encode(tokenizer, task.test, spec, cfg.max_length) if task.test else None
    per_seed, best = {}, None
    for seed in seeds:
        model, history = train_one_seed(spec, cfg, start.model_cfg, start.encoder_state, train, dev, seed, device,
                                        show_progress, log=tqdm.write)
        per_seed[str(seed)] = {**history[-1], "per_epoch": history}
        if best is None or history[-1][spec.metric] > best[1][spec.metric]:
            best = (seed, history[-1], model)
    scores = [100 * r[spec.metric] for r in per_seed.values()]
    report = {
        "task": spec.name, "model": start.source, "metric": spec.metric, "seeds": per_seed,
        "median": statistics.median(scores), "mean": statistics.fmean(scores),
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "best_seed": best[0], "config": asdict(cfg), "train_examples": len(train.ids),
    }
    with building_dir(out) as tmp:
        _save_best(tmp, best[2], spec, start.model_cfg, cfg, tokenizer, report)
        _write_predictions(tmp / "predictions" / "dev.tsv", spec, task.dev, predict(best[2], dev, spec, device))
        if test is not None:
            _write_predictions(tmp / "predictions" / "test.tsv", spec, task.test,
                               predict(best[2], test, spec, device))
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def resolved(cfg: FinetuneConfig, spec: TaskSpec, size: str, train_examples: int, max_length: int,
             fixed_word_vectors: bool = False) -> FinetuneConfig:
    """The config's unset values made concrete: lr and layer decay by model size, the task's epochs
    (or more, up to MIN_STEPS optimizer steps, on a small training set), the pooling by model size
    and training set size, the length, and the embeddings kept fixed where pre-training kept its
    word vectors fixed."""
    steps_per_epoch = max(1, math.ceil(train_examples / cfg.batch_size))
    embedding_lr_scale = cfg.embedding_lr_scale if cfg.embedding_lr_scale is not None else float(not fixed_word_vectors)
    small_set = train_examples <= PRESET_MEAN_POOLING_MAX_EXAMPLES.get(size, 0)
    return replace(cfg, lr=cfg.lr or PRESET_LR.get(size, 3e-4), max_length=max_length,
                   pooling=cfg.pooling or ("mean" if small_set else "cls"),
                   embedding_lr_scale=embedding_lr_scale,
                   layer_decay=cfg.layer_decay if cfg.layer_decay is not None else PRESET_LAYER_DECAY.get(size, 0.8),
                   epochs=cfg.epochs or max(spec.epochs, math.ceil(MIN_STEPS / steps_per_epoch)))


def _save_best(folder: Path, model: Classifier, spec: TaskSpec, model_cfg: ModelConfig, cfg: FinetuneConfig,
               tokenizer, report: dict):
    best = folder / "best"
    best.mkdir(parents=True)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(best / "model.safetensors"))  # the model itself stays on its device
    tokenizer.no_truncation()
    tokenizer.save(str(best / TOKENIZER_FILE))
    (best / "config.json").write_text(json.dumps({
        "task": asdict(spec), "model": asdict(model_cfg), "finetune": asdict(cfg), "seed": report["best_seed"],
    }, indent=2))


def _write_predictions(path: Path, spec: TaskSpec, examples: list[Example], predictions: torch.Tensor):
    """GLUE submission layout: `index<TAB>prediction`, labels as the task writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"]
    for example, p in zip(examples, predictions.tolist()):
        if spec.regression:
            lo, hi = spec.label_range or (-math.inf, math.inf)
            lines.append(f"{example.index}\t{min(max(p, lo), hi):.3f}")
        else:
            lines.append(f"{example.index}\t{spec.labels[int(p)]}")
    path.write_text("\n".join(lines) + "\n")


def summary_line(report: dict) -> str:
    seeds = ", ".join(f"{s}: {100 * r[report['metric']]:.2f}" for s, r in report["seeds"].items())
    return (f"{report['task']} dev {report['metric']} (%): median {report['median']:.2f}, mean "
            f"{report['mean']:.2f}, std {report['std']:.2f} over seeds ({seeds})")

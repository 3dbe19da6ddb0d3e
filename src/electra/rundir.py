"""Run directories: creating one, giving an imported one its data, deciding what `pretrain` starts
or continues, and loading a trained one.

A run directory holds `config.json` (the resolved config), `tokenizer.json`, `token_counts.npy`
(the training corpus's counts, the rarity baseline of `evaluate`), `run.json` (where its prepared
data lives), `data/` when it prepared its own corpus, `metrics.jsonl` and `checkpoints/`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from electra.atomic import building_dir, require_empty_dir, write_json_atomic
from electra.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from electra.config import Config, apply_overrides, preset_config
from electra.data import COUNTS_FILE, load_index, prepare_corpus
from electra.errors import UsageError
from electra.objective import build_model
from electra.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
DATA_DIR = "data"


def start_run(cfg: Config, run_dir, corpus=None, data_dir=None, show_progress: bool = True):
    """Make a run directory: tokenizer + prepared data (from `corpus`) or a link to `data_dir`.
    Built under a temporary name and renamed, so a failed setup leaves nothing behind.
    Returns (cfg with the tokenizer's vocabulary size, data directory)."""
    run = require_empty_dir(run_dir, "continue it with --resume, or choose a new --out")
    with building_dir(run) as tmp:
        if corpus:
            d = cfg.data
            stats = train_tokenizer(corpus, tmp, d.vocab_size, d.lowercase, d.normalization, d.doc_sep,
                                    show_progress=show_progress)
            if stats.replaced:
                tqdm.write(f"note: {stats.replaced} undecodable byte sequences were replaced by U+FFFD")
            _prepare(cfg, corpus, tmp, show_progress)
            data = run / DATA_DIR
        else:
            load_index(data_dir)
            data = Path(data_dir).resolve()
            shutil.copyfile(data / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        shutil.copyfile((tmp / DATA_DIR if corpus else data) / COUNTS_FILE, tmp / COUNTS_FILE)
        cfg = apply_overrides(cfg, {"model.vocab_size": load_tokenizer(tmp).get_vocab_size()})
        (tmp / RUN_FILE).write_text(json.dumps({"data_dir": str(data)}, indent=2))
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    return cfg, data


def _prepare(cfg: Config, corpus, run_dir: Path, show_progress: bool) -> Path:
    """Prepare `corpus` with the tokenizer in `run_dir` into `run_dir/data`, as `cfg.data` says."""
    d = cfg.data
    prepare_corpus(corpus, run_dir, run_dir / DATA_DIR, d.doc_sep, d.val_fraction, d.val_max_tokens,
                   show_progress=show_progress)
    return run_dir / DATA_DIR


def run_data_dir(run_dir) -> Path | None:
    """The prepared data a run trains on (recorded by start_run or attach_data); None if it has none
    yet (an imported run)."""
    run = Path(run_dir)
    if (run / DATA_DIR).is_dir():
        return run / DATA_DIR
    try:
        record = json.loads((run / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Path(record["data_dir"]) if "data_dir" in record else None


def attach_data(cfg: Config, run_dir, corpus=None, data_dir=None, show_progress: bool = True) -> Path:
    """Give a run without data (made by `electra import`) its corpus, prepared with the run's own
    tokenizer (`corpus`), or prepared shards made with that tokenizer (`data_dir`)."""
    run = Path(run_dir)
    if corpus:
        data = _prepare(cfg, corpus, run, show_progress)
    else:
        load_index(data_dir)
        data = Path(data_dir).resolve()
        if load_tokenizer(data).get_vocab() != load_tokenizer(run).get_vocab():
            raise UsageError(f"{str(data_dir)!r} was prepared with another tokenizer than the run's; "
                             f"prepare it with `electra prepare --tokenizer {run}`")
    shutil.copyfile(data / COUNTS_FILE, run / COUNTS_FILE)
    record = json.loads((run / RUN_FILE).read_text()) if (run / RUN_FILE).is_file() else {}
    write_json_atomic(run / RUN_FILE, {**record, "data_dir": str(data)})
    return data


def open_run(out, preset: str = "tiny", overrides: dict | None = None, corpus=None, data_dir=None,
             resume: bool = False, show_progress: bool = True) -> tuple[Config, Path]:
    """What `electra pretrain` trains: (config, data directory) of a new run (tokenizer + data from
    `corpus`, or `data_dir`), of a resumed one, or of an imported one that gets its data now."""
    overrides = overrides or {}
    config_path = Path(out) / CONFIG_FILE
    if resume:
        if not config_path.is_file():
            raise UsageError(f"nothing to resume in {str(out)!r} (no {CONFIG_FILE}); start without --resume")
        cfg = apply_overrides(Config.from_dict(json.loads(config_path.read_text())), overrides)
        data = run_data_dir(out)
        if data is not None and (corpus or data_dir):
            raise UsageError("--resume continues RUN on its own data; drop --corpus/--data")
        if data is None:  # an imported run: it trains on the corpus given now
            if bool(corpus) == bool(data_dir):
                raise UsageError(f"{str(out)!r} has no data yet (an imported model); give --corpus FILE... "
                                 "or --data DIR with --resume")
            data = attach_data(cfg, out, corpus, data_dir, show_progress=show_progress)
        return cfg, data
    if bool(corpus) == bool(data_dir):
        raise UsageError("give either --corpus FILE... (raw text) or --data DIR (prepared shards)")
    cfg = apply_overrides(preset_config(preset), overrides)
    return start_run(cfg, out, corpus, data_dir, show_progress=show_progress)


@dataclass
class LoadedRun:
    cfg: Config
    model: torch.nn.Module  # Electra, or MaskedLM
    tokenizer: object
    checkpoint: Path
    step: int

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent.parent


def load_run(run_dir, step: int | None = None, device="cpu") -> LoadedRun:
    """A run's model (rebuilt from its config.json, the checkpoint loaded strictly) and tokenizer."""
    run = Path(run_dir)
    if not run.is_dir() or not (run / CONFIG_FILE).is_file():
        raise UsageError(f"{str(run)!r} is not a run directory (no {CONFIG_FILE}); "
                         "give the --out of `electra pretrain`")
    try:
        cfg = Config.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise UsageError(f"{str(run / CONFIG_FILE)!r} is not valid JSON ({e})")
    if step is None:
        ckpt = latest_checkpoint(run)
    else:
        ckpt = next((c for c in list_checkpoints(run) if int(c.name[5:]) == step), None)
    if ckpt is None:
        which = "checkpoint" if step is None else f"checkpoint for step {step}"
        raise UsageError(f"{str(run)!r} has no {which}; train it first (or pick another --step)")
    tokenizer = load_tokenizer(run)
    if tokenizer.get_vocab_size() != cfg.model.vocab_size:
        raise UsageError(f"the tokenizer in {str(run)!r} has {tokenizer.get_vocab_size()} tokens but the "
                         f"model expects {cfg.model.vocab_size}")
    model = build_model(cfg.model, cfg.objective)
    state = load_checkpoint(ckpt, model)
    model.to(device).eval()
    return LoadedRun(cfg, model, tokenizer, ckpt, state["step"])

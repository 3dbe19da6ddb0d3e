"""Run directories: creating one, giving an imported one its data, deciding what `pretrain` starts
or continues, and loading a trained one.

A run directory holds `config.json` (the resolved config), `tokenizer.json`, `token_counts.npy`
(the training corpus's counts, the rarity baseline of `evaluate`), `run.json` (where its prepared
data lives), `data/` when it prepared its own corpus, `metrics.jsonl` and `checkpoints/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from electra.atomic import building_dir, require_empty_dir, write_json_atomic
from electra.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from electra.config import Config, apply_overrides, preset_config
from electra.corpus import BUILTIN, check_corpus_files
from electra.data import COUNTS_FILE, load_index, prepare_corpus
from electra.errors import UsageError
from electra.objective import build_model
from electra.tokenizer import TOKENIZER_FILE, continuation_ids, load_tokenizer, train_tokenizer

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
DATA_DIR = "data"


def start_run(cfg: Config, run_dir, corpus=None, data_dir=None, show_progress: bool = True,
              preset: str | None = None):
    """Make a run directory: tokenizer + prepared data (from `corpus`) or a link to `data_dir`.
    Built under a temporary name and renamed, so a failed setup leaves nothing behind. `run.json`
    records where the data came from, for `--resume` to check. Returns (cfg with the tokenizer's
    vocabulary size, data directory)."""
    run = require_empty_dir(run_dir, "continue it with --resume, or choose a new --out")
    with building_dir(run) as tmp:
        if corpus:
            d = cfg.data
            stats = train_tokenizer(corpus, tmp, d.vocab_size, d.lowercase, d.normalization, d.doc_sep,
                                    show_progress=show_progress)
            if stats.replaced:
                tqdm.write(f"note: {stats.replaced} undecodable byte sequences were replaced by U+FFFD")
            if not d.vocab_size:
                tqdm.write(f"tokenizer: {load_tokenizer(tmp).get_vocab_size():,} pieces for {stats.words:,} words "
                           "(data.vocab_size 0: by the corpus's size; --vocab-size N to choose)")
            _prepare(cfg, corpus, tmp, show_progress)
            data = run / DATA_DIR
        else:
            load_index(data_dir)
            data = Path(data_dir).resolve()
            shutil.copyfile(data / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        shutil.copyfile((tmp / DATA_DIR if corpus else data) / COUNTS_FILE, tmp / COUNTS_FILE)
        vocab_size = load_tokenizer(tmp).get_vocab_size()
        cfg = apply_overrides(cfg, {"model.vocab_size": vocab_size, "data.vocab_size": vocab_size})
        record = {"data_dir": str(data), "preset": preset, **source_record(corpus, data_dir),
                  "data_sha256": data_fingerprint(tmp / DATA_DIR if corpus else data)}
        (tmp / RUN_FILE).write_text(json.dumps(record, indent=2))
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


def open_run(out, preset: str | None = None, overrides: dict | None = None, corpus=None, data_dir=None,
             resume: bool = False, show_progress: bool = True) -> tuple[Config, Path]:
    """What `electra pretrain` trains: (config, data directory) of a new run (tokenizer + data from
    `corpus`, or `data_dir`), of a resumed one, or of an imported one that gets its data now.

    `resume` is safe to pass always, so that a preemptible job can rerun one command line until it
    finishes: with nothing to resume yet (not even started, or killed while preparing) the run
    starts; otherwise it continues, after checking that `corpus` / `data_dir` / `preset`, if
    given, are what the run recorded."""
    out, overrides = Path(out), overrides or {}
    if resume and not (out / CONFIG_FILE).is_file():
        if not (corpus or data_dir):
            raise UsageError(f"nothing to resume in {str(out)!r} (no {CONFIG_FILE}); start it with --corpus "
                             "FILE... or --data DIR")
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a start that was killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        tqdm.write(f"nothing to resume in {out} yet: starting it")
        resume = False
    if not resume:
        if corpus and data_dir:
            raise UsageError("give either --corpus FILE... (raw text) or --data DIR (prepared shards)")
        if not (corpus or data_dir):
            corpus = [BUILTIN]
            tqdm.write("no --corpus or --data: training on the built-in corpus (13 public-domain books, 1.06 M "
                       "words; --corpus FILE... for your own text)")
        cfg = apply_overrides(preset_config(preset or "tiny"), overrides)
        return start_run(cfg, out, corpus, data_dir, show_progress=show_progress, preset=preset or "tiny")
    cfg = apply_overrides(Config.from_dict(json.loads((out / CONFIG_FILE).read_text())), overrides)
    record = _run_record(out)
    if preset and record.get("preset") not in (None, preset):
        raise UsageError(f"{str(out)!r} was started with --preset {record['preset']}, not {preset}; drop --preset "
                         "or give the run's")
    data = run_data_dir(out)
    if data is None:  # an imported run: it trains on the corpus given now
        if bool(corpus) == bool(data_dir):
            raise UsageError(f"{str(out)!r} has no data yet (an imported model); give --corpus FILE... "
                             "or --data DIR with --resume")
        return cfg, attach_data(cfg, out, corpus, data_dir, show_progress=show_progress)
    if corpus or data_dir:
        check_same_source(out, record, data, corpus, data_dir)
    return cfg, data


def _run_record(run: Path) -> dict:
    try:
        return json.loads((run / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def source_record(corpus=None, data_dir=None) -> dict:
    """What a run's data came from: the corpus files (path and size), or the prepared directory."""
    if corpus:
        return {"corpus": [{"path": str(f.resolve()), "bytes": f.stat().st_size} if isinstance(f, Path)
                           else {"path": str(f), "bytes": None} for f in check_corpus_files(corpus)]}
    return {"data": str(Path(data_dir).resolve())}


def data_fingerprint(data_dir) -> str:
    """SHA-256 over a prepared directory's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(data_dir).iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_same_source(run: Path, record: dict, data: Path, corpus=None, data_dir=None):
    """A resumed run given --corpus / --data: they must be what it was started with, and its
    prepared data unchanged since; otherwise a UsageError naming the difference."""
    given = source_record(corpus, data_dir)
    fix = "give the run's own, or drop --corpus/--data when resuming"
    if "corpus" in given and "corpus" in record:
        was, now = [c["path"] for c in record["corpus"]], [c["path"] for c in given["corpus"]]
        if was != now:
            extra, missing = sorted(set(now) - set(was)), sorted(set(was) - set(now))
            what = f"{extra[0]!r} is not one of its files" if extra else (
                f"{missing[0]!r} is missing" if missing else "the files are in another order")
            raise UsageError(f"--corpus differs from the one {str(run)!r} was started with: {what}; {fix}")
        for w, n in zip(record["corpus"], given["corpus"]):
            if w["bytes"] != n["bytes"]:
                raise UsageError(f"--corpus file {n['path']!r} has {n['bytes']:,} bytes, {w['bytes']:,} when "
                                 f"{str(run)!r} was started; {fix}")
    elif "data" in given and "data" in record:
        if given["data"] != record["data"]:
            raise UsageError(f"--data {given['data']!r} is not the directory {str(run)!r} was started with "
                             f"({record['data']!r}); {fix}")
    elif given:
        started = "--corpus" if "corpus" in record else "--data" if "data" in record else "nothing recorded"
        raise UsageError(f"{str(run)!r} was started with {started}, not {'--corpus' if 'corpus' in given else '--data'}; "
                         f"{fix}")
    if record.get("data_sha256") and data_fingerprint(data) != record["data_sha256"]:
        raise UsageError(f"the prepared data in {str(data)!r} changed since {str(run)!r} was started (its SHA-256 "
                         "differs); restore it or start a new run")


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
    model.set_word_pieces(continuation_ids(tokenizer))
    state = load_checkpoint(ckpt, model)
    model.to(device).eval()
    return LoadedRun(cfg, model, tokenizer, ckpt, state["step"])

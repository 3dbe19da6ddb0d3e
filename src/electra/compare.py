"""`electra compare`: pre-training objectives and settings side by side, on your data and budget.

Each arm pre-trains on the same tokenizer and prepared corpus with the same budget, once per
pre-training seed, and every run is fine-tuned on a task with several seeds; `scratch` fine-tunes
the same encoder from random weights. A budget is wall-clock ("15m") or FLOPs ("6.6e13"): with
FLOPs each arm trains as many steps as its model's cost allows (equal compute, reproducible, and
indifferent to a busy machine, so that `--jobs 2` can run two at once). With `--lrs`, each arm's
fine-tuning learning rate is the grid's best on dev (median over all its runs). An arm is
`NAME[:KEY=VALUE,...]` of pre-training overrides (`finetune.*` keys: fine-tuning settings; arms
that differ only there share their pre-training runs); `electra` and `mlm` are predefined, and
`scratch` (or `scratch-NAME`) is the base architecture from random weights.

Results: `OUT/results.json` (per arm: the median over pre-training x fine-tuning seeds, every
value, the learning rate chosen, pre-training FLOPs and held-out metrics) and `OUT/report.html`.
Finished work is kept: the same command again continues where it stopped, and with more
pre-training seeds, learning rates or arms (after the others) it extends the comparison (only the
new cells run).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import active_children, get_context
from pathlib import Path

from electra.config import Config, apply_overrides, parse_duration, preset_config
from electra.errors import UsageError
from electra.flops import training_flops_per_token
from electra.report import downstream_result, load_history, write_report
from electra.tasks import GLUE

PREDEFINED_ARMS = {"electra": {}, "mlm": {"objective.kind": "mlm"}}
SCRATCH = "scratch"
FINETUNE = "finetune."  # an arm's keys with this prefix set FinetuneConfig fields, the rest pre-training


@dataclass(frozen=True)
class CompareConfig:
    task: str
    budget: str  # "15m" (wall-clock) or "6.6e13" (FLOPs per run)
    arms: tuple[str, ...] = ("electra", "mlm", SCRATCH)
    pretrain_seeds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (1, 2, 3)  # fine-tuning
    lrs: tuple[float, ...] = ()  # fine-tuning grid; empty: the model size's default
    train_size: int | None = None
    epochs: int | None = None
    layer_decay: float | None = None
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # pre-training, every arm

    def __post_init__(self):
        if self.task not in GLUE:
            raise UsageError(f"--task {self.task!r}: compare runs a GLUE task ({', '.join(GLUE)})")
        flops_budget(self.budget) or parse_duration(self.budget)
        for arm in self.arms:
            arm_overrides(arm)
        if not self.pretrain_seeds or not self.seeds:
            raise UsageError("--pretrain-seeds and --seeds need at least one seed each")


def flops_budget(budget: str) -> float | None:
    """The budget in FLOPs if it is written as a number of them (at least 1e9), else None."""
    try:
        value = float(budget)
    except ValueError:
        return None
    return value if value >= 1e9 else None


def arm_overrides(arm: str) -> dict | None:
    """`NAME[:KEY=VALUE,...]` -> its pre-training overrides (`finetune.*` keys excluded); None for
    `scratch` (no pre-training)."""
    name, pairs = _parse_arm(arm)
    if name == SCRATCH or name.startswith(SCRATCH + "-"):
        if any(not k.startswith(FINETUNE) for k in pairs):
            raise UsageError("the scratch arm takes only finetune.* overrides (it uses the base architecture)")
        return None
    return {**PREDEFINED_ARMS.get(name, {}), **{k: v for k, v in pairs.items() if not k.startswith(FINETUNE)}}


def finetune_overrides(arm: str) -> dict:
    """An arm's fine-tuning settings (`finetune.pooling=mean` -> {"pooling": "mean"}), as typed values."""
    def typed(text):
        try:
            return json.loads(text)
        except ValueError:
            return text

    return {k[len(FINETUNE):]: typed(v) for k, v in _parse_arm(arm)[1].items() if k.startswith(FINETUNE)}


def _parse_arm(arm: str) -> tuple[str, dict]:
    name, _, spec = arm.partition(":")
    pairs = [p for p in spec.split(",") if p]
    if (not name or any("=" not in p for p in pairs)
            or (not pairs and name not in PREDEFINED_ARMS and name.partition("-")[0] != SCRATCH)):
        raise UsageError(f"--arm {arm!r}: write NAME:KEY=VALUE[,KEY=VALUE...] (or electra, mlm, scratch)")
    return name, dict(p.split("=", 1) for p in pairs)


def arm_name(arm: str) -> str:
    return arm.partition(":")[0]


def compare(cc: CompareConfig, task_dir, out_dir, corpus=None, pretrain_data=None, jobs: int = 1,
            show_progress: bool = True) -> dict:
    from electra.data import load_index
    from electra.tasks import load_task

    out = Path(out_dir)
    _claim(out, cc)
    load_task(GLUE[cc.task], task_dir, cc.train_size)  # fail on a bad task before pre-training
    task_dir = None if task_dir is None else str(task_dir)
    data = _prepared_data(cc, out, corpus, pretrain_data, show_progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    vocab_size = load_index(data)["vocab_size"]
    # arms that pre-train alike (they differ in fine-tuning only) share their runs
    runs, configs, shared = {}, {}, {}
    for arm in cc.arms:
        if arm_overrides(arm) is None:
            continue
        owner = shared.setdefault(json.dumps(arm_overrides(arm), sort_keys=True), arm_name(arm))
        for s in cc.pretrain_seeds:
            runs[(arm_name(arm), s)] = out / "runs" / f"{owner}-s{s}"
            configs[runs[(arm_name(arm), s)]] = _run_config(cc, arm, s, threads, vocab_size)
    _run_all(_pretrain_job, [(cfg, cc.preset, str(run), str(data), show_progress and jobs == 1)
                             for run, cfg in configs.items()], jobs)

    lrs = cc.lrs or (None,)
    finetunes = []  # (arm, pre-training seed or None, lr, folder, fine-tuning overrides, fine-tuning seeds)
    for arm in cc.arms:
        name = arm_name(arm)
        for s in (cc.pretrain_seeds if arm_overrides(arm) is not None else [None]):
            for lr in lrs:
                folder = out / "finetune" / f"{name}-s{s}" / f"lr{lr or 'default'}"
                finetunes.append((name, s, lr, folder, finetune_overrides(arm),
                                  cc.seeds if s is not None else _scratch_seeds(cc)))
    _run_all(_finetune_job, [
        (cc, str(runs[(arm, s)]) if s is not None else None, str(data), task_dir, lr, str(folder), seeds, threads,
         show_progress and jobs == 1, ft)
        for arm, s, lr, folder, ft, seeds in finetunes if not _finetuned(folder, seeds)], jobs)

    results = {arm: _arm_result(arm, finetunes, sorted({runs[k] for k in runs if k[0] == arm}))
               for arm in map(arm_name, cc.arms)}
    (out / "results.json").write_text(json.dumps({"config": asdict(cc), "results": results}, indent=2))
    write_report(sorted(set(runs.values())), out, results, title=f"{', '.join(results)}: {cc.budget} each, {cc.task} dev")
    return results


def _claim(out: Path, cc: CompareConfig):
    """OUT holds this comparison's work (continued, or extended by `cc`), or nothing yet."""
    from electra.atomic import write_json_atomic

    marker, wanted = out / "compare.json", json.loads(json.dumps(asdict(cc)))
    if marker.is_file():
        held = json.loads(marker.read_text())
        if held != wanted:
            if not _extends(held, wanted):
                raise UsageError(f"{str(out)!r} holds a comparison with other settings (its compare.json); "
                                 "give the same flags to continue it (more --pretrain-seeds or --lrs, or --arm "
                                 "after the others, extend it), or choose a new --out")
            write_json_atomic(marker, wanted)
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{str(out)!r} already exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, wanted)


def _extends(held: dict, wanted: dict) -> bool:
    """`wanted` keeps every arm, pre-training seed and learning rate of `held` and adds to them,
    everything else equal: the work done stays valid and only the new cells need running. New arms
    come after the old ones, so that arms sharing runs keep the same owner (the runs' folder name)."""
    def fixed(settings):
        return {k: v for k, v in settings.items() if k not in ("arms", "pretrain_seeds", "lrs")}

    return (fixed(held) == fixed(wanted) and wanted["arms"][:len(held["arms"])] == held["arms"]
            and set(held["pretrain_seeds"]) <= set(wanted["pretrain_seeds"])
            and set(held["lrs"]) <= set(wanted["lrs"]) and bool(held["lrs"]) == bool(wanted["lrs"]))


def _prepared_data(cc: CompareConfig, out: Path, corpus, pretrain_data, show_progress: bool) -> Path:
    """One tokenizer and prepared corpus for every arm: `pretrain_data`, or `corpus` prepared in OUT/data."""
    if corpus and pretrain_data:
        raise UsageError("give either --corpus FILE... (raw text) or --pretrain-data DIR (prepared shards)")
    if pretrain_data:
        return Path(pretrain_data)
    from electra.atomic import building_dir
    from electra.corpus import BUILTIN
    from electra.data import INDEX_FILE, prepare_corpus
    from electra.tokenizer import train_tokenizer

    data, corpus = out / "data", corpus or [BUILTIN]
    if not (data / INDEX_FILE).is_file():
        d = apply_overrides(preset_config(cc.preset), cc.overrides).data
        with building_dir(out / "tokenizer") as tmp:
            train_tokenizer(corpus, tmp, d.vocab_size, d.lowercase, d.normalization, d.doc_sep,
                            show_progress=show_progress)
        prepare_corpus(corpus, out / "tokenizer", data, d.doc_sep, d.val_fraction, d.val_max_tokens,
                       show_progress=show_progress)
    return data


def _run_config(cc: CompareConfig, arm: str, seed: int, threads: int, vocab_size: int) -> dict:
    cfg = apply_overrides(preset_config(cc.preset), {"train.threads": threads, **cc.overrides, **arm_overrides(arm),
                                                     "train.seed": seed, "model.vocab_size": vocab_size})
    flops = flops_budget(cc.budget)
    if flops is None:
        return apply_overrides(cfg, {"train.time_budget": cc.budget}).to_dict()
    per_step = training_flops_per_token(cfg) * cfg.train.batch_size * cfg.data.seq_len
    return apply_overrides(cfg, {"train.time_budget": "", "train.max_steps": max(1, int(flops // per_step))}).to_dict()


def _finetuned(folder: Path, seeds) -> bool:
    """`folder` holds fine-tuning results for every one of `seeds` (an extended comparison gives
    `scratch` a seed per pre-training seed: its folder is then fine-tuned again, whole)."""
    report = folder / "metrics.json"
    return report.is_file() and {str(s) for s in seeds} <= set(json.loads(report.read_text())["seeds"])


def _scratch_seeds(cc: CompareConfig) -> tuple[int, ...]:
    """As many fine-tuning runs as a pre-trained arm has (seeds x pre-training seeds)."""
    return tuple(s + 1000 * k for k in range(len(cc.pretrain_seeds)) for s in cc.seeds)


def _run_all(job, argument_lists: list[tuple], jobs: int):
    """Run the jobs, `jobs` at a time. An error or an interruption in one stops the comparison: no
    job starts after it, the running ones finish (interrupted, they save a checkpoint)."""
    if jobs <= 1 or len(argument_lists) <= 1:
        for arguments in argument_lists:
            job(*arguments)
        return
    waiting, running = list(argument_lists), set()
    try:
        with _workers_stopped_on_sigterm(), ProcessPoolExecutor(jobs, mp_context=get_context("spawn"),
                                                                initializer=_ignore_stop_signals) as pool:
            while waiting or running:
                while waiting and len(running) < jobs:  # handed out one by one: the pool queues none ahead
                    running.add(pool.submit(_stoppable, job, *waiting.pop(0)))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # re-raises a job's error
    except KeyboardInterrupt as e:  # Ctrl-C: a worker's own account (all have ended here) says where it stopped
        accounts = [f.exception() for f in running]
        raise next((a for a in accounts if isinstance(a, KeyboardInterrupt) and a.args), e) from None


def _ignore_stop_signals():
    """A worker between jobs ignores SIGINT / SIGTERM: stopped there, it would die holding the job
    queue's lock, the pool would break and the running jobs end without their checkpoints."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _stoppable(job, *arguments):
    """Run `job` in a worker with SIGINT / SIGTERM raising KeyboardInterrupt (pre-training's own
    handler takes over inside it, to checkpoint first); between jobs they are ignored again."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        return job(*arguments)
    finally:
        _ignore_stop_signals()


@contextmanager
def _workers_stopped_on_sigterm():
    """`kill` of this process stops its workers as Ctrl-C does (Ctrl-C reaches the whole process
    group; SIGTERM only this process, and the workers would go on without it)."""
    def stop(signum, frame):
        for worker in active_children():
            os.kill(worker.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pretrain_job(cfg_dict: dict, preset: str, run: str, data: str, show_progress: bool):
    """Pre-train one arm's run (continued if it was interrupted; skipped if it is complete)."""
    from electra.rundir import open_run
    from electra.train import pretrain

    cfg = Config.from_dict(cfg_dict)
    if _pretrained_step(run, cfg) is None:
        return
    _check_same_settings(Path(run), cfg_dict)
    overrides = {f"{section}.{k}": v for section, values in cfg_dict.items() for k, v in values.items()
                 if not (section == "model" and k == "vocab_size")}
    cfg, data_dir = open_run(run, preset, overrides, data_dir=data, resume=True, show_progress=show_progress)
    pretrain(cfg, run, data_dir, resume=True, show_progress=show_progress)
    step = _pretrained_step(run, cfg)
    if step is not None:  # stopped by SIGINT / SIGTERM: a part-trained run fine-tuned would pass as finished
        raise KeyboardInterrupt(f"{run} stopped at step {step} of {cfg.train.max_steps} (checkpoint saved); "
                                "give the same command again to continue the comparison")


# what may differ between a run's start and its continuation without changing what it learns
_FREE_ON_RESUME = {("train", "threads"), ("model", "vocab_size"), ("data", "vocab_size")}


def _check_same_settings(run: Path, cfg_dict: dict):
    """A run the comparison continues must have started with the settings it asks for now; a preset
    changed in between (a new `tiny`) would otherwise go on with other settings, silently."""
    if not (run / "config.json").is_file():
        return
    saved, wanted = json.loads((run / "config.json").read_text()), json.loads(json.dumps(cfg_dict))
    changed = [f"{section}.{k} {saved[section][k]!r} -> {v!r}" for section, values in wanted.items()
               for k, v in values.items() if (section, k) not in _FREE_ON_RESUME
               and k in saved.get(section, {}) and saved[section][k] != v]
    if changed:
        raise UsageError(f"{str(run)!r} started with other settings than this comparison asks now ("
                         f"{', '.join(changed)}; has the preset changed?): continue it as it started, with "
                         f"`electra pretrain --out {run} --resume`, then give this command again")


def _pretrained_step(run: str, cfg: Config) -> int | None:
    """The step the run's last checkpoint holds, or None once it has reached its budget."""
    from electra.checkpoint import latest_checkpoint

    last = latest_checkpoint(run)
    if last is None:
        return 0
    state = json.loads((last / "state.json").read_text())
    budget = cfg.train.time_budget_seconds
    done = state["step"] >= cfg.train.max_steps or (budget and state.get("elapsed", 0) >= budget)
    return None if done else state["step"]


def _finetune_job(cc: CompareConfig, run: str | None, data: str, task_dir: str | None, lr: float | None, out: str,
                  seeds, threads: int, show_progress: bool, overrides: dict | None = None):
    """Fine-tune a run (or, run None, the base architecture from random weights) with `seeds`; an
    earlier result in `out` with fewer seeds is replaced when the new one is complete."""
    from electra.finetune import FinetuneConfig, StartingPoint, finetune, starting_point
    from electra.runtime import set_cpu_threads
    from electra.tasks import load_task
    from electra.tokenizer import load_tokenizer

    set_cpu_threads(threads)
    spec = GLUE[cc.task]
    if run is None:
        tokenizer = load_tokenizer(data)
        base = apply_overrides(preset_config(cc.preset), {**cc.overrides, "model.vocab_size": tokenizer.get_vocab_size()})
        start = StartingPoint(tokenizer, base.model, None, cc.preset, SCRATCH)
    else:
        start = replace(starting_point(run), size=cc.preset, source=Path(run).name)
    cfg = FinetuneConfig(**{"lr": lr, "epochs": cc.epochs, **({"layer_decay": cc.layer_decay} if cc.layer_decay else {}),
                            **(overrides or {})})
    finetune(spec, load_task(spec, task_dir, cc.train_size), cfg, start, out, seeds, show_progress=show_progress,
             overwrite=True)


def _arm_result(arm: str, finetunes, runs: list[Path]) -> dict:
    """The arm's scores at its best learning rate (median over all its runs on dev), every lr's
    median, and its pre-training cost and held-out metrics (per pre-training seed)."""
    by_lr = {}
    for a, _, lr, folder, *_ in finetunes:
        if a == arm:
            report = json.loads((folder / "metrics.json").read_text())
            entry = by_lr.setdefault(lr, {"metric": report["metric"], "lr": report["config"]["lr"], "seeds": []})
            entry["seeds"] += downstream_result(report)["seeds"]
    best = max(by_lr.values(), key=lambda e: statistics.median(e["seeds"]))
    result = {"metric": best["metric"], "median": statistics.median(best["seeds"]), "seeds": best["seeds"],
              "min": min(best["seeds"]), "max": max(best["seeds"]), "lr": best["lr"],
              "median_by_lr": {str(e["lr"]): statistics.median(e["seeds"]) for e in by_lr.values()},
              "pretrain_flops": 0, "pretrain_steps": [], "heldout": []}
    for run in runs:
        history = load_history(run)
        steps = history["train"][-1]["step"] if history["train"] else 0
        result["pretrain_steps"].append(steps)
        result["pretrain_flops"] = max(result["pretrain_flops"], steps * history["flops_per_step"])
        last = history["val"][-1] if history["val"] else {}
        result["heldout"].append({k: last.get(k, math.nan) for k in ("disc_auc", "gen_accuracy")})
    return result

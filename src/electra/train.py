"""The pre-training loop: `pretrain(cfg, run_dir, data_dir)`.

One step reads top to bottom: set the learning rate, take the step's examples from the endless
shuffled stream, run the micro-batches (gradients accumulated, losses normalised by the whole
step's counts), clip, step; then log, evaluate and checkpoint on their intervals. Everything the
step depends on (data position, masking, sampling) derives from (seed, step), and the RNG state is
checkpointed, so a resumed run reproduces an uninterrupted one bit for bit on CPU. The open log
window is checkpointed too, so its metrics.jsonl repeats that run's records (timings aside).
Schedule and optimizer (optim.py) follow google-research/electra.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from electra.atomic import write_json_atomic
from electra.checkpoint import (latest_checkpoint, latest_valid_checkpoint, list_checkpoints, load_checkpoint,
                                remove_stale_temporaries, save_checkpoint)
from electra.config import Config
from electra.data import PretrainingData, stream_indices
from electra.distributed import Dist, agree, no_sync, sum_dict_over_ranks, sum_over_ranks, wrap
from electra.errors import UsageError
from electra.evaluate import evaluate_rtd
from electra.metrics_log import MetricsLog, NullLog, Window
from electra.noise import draw_noise, example_keys
from electra.objective import build_model, corpus_words, count_parameters, loss_denominators
from electra.optim import build_optimizer, lr_at
from electra.rundir import CONFIG_FILE, METRICS_FILE
from electra.runtime import autocast_for, resolve_device, set_cpu_threads
from electra.tokenizer import continuation_ids, load_tokenizer
from electra.word_vectors import corpus_tokens, init_word_vectors

CORPUS_WORDS_TOKENS = 4_000_000  # the tokens counted for `objective.word_swap_source = "corpus"`


@dataclass
class Trainer:
    """What the loop works with: data, model and optimizer, where they run, and the step count."""

    cfg: Config
    ranks: Dist
    device: torch.device
    autocast: object  # a context-manager factory
    precision: str
    train_data: PretrainingData
    val_data: PretrainingData
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, wrapped in DDP and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: int = 0
    elapsed_before: float = 0.0  # seconds trained before this process (a resumed run)
    log_window: dict | None = None  # the unfinished log window a resumed run's checkpoint saved

    @property
    def per_rank(self) -> int:
        return self.cfg.train.batch_size // self.ranks.world_size


def pretrain(cfg: Config, run_dir, data_dir, resume: bool = False, show_progress: bool = True,
             ranks: Dist | None = None) -> dict:
    """Pre-train (or continue) the run in `run_dir`; returns the last evaluation's metrics (on rank 0).
    Under torchrun, `ranks` says which process this is: each takes its share of every step's
    global batch, and only rank 0 writes."""
    run, tc, ranks = Path(run_dir), cfg.train, ranks or Dist()
    t = setup(cfg, run, data_dir, resume, ranks)
    log = MetricsLog(run / METRICS_FILE, t.step) if ranks.is_main else NullLog()
    log.echo(_describe(t))
    budget = tc.time_budget_seconds
    bar = tqdm(total=int(budget) if budget else tc.max_steps, initial=0 if budget else t.step,
               unit="s" if budget else "step", disable=not (show_progress and ranks.is_main), dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
    start_time = time.monotonic()
    elapsed = lambda: t.elapsed_before + time.monotonic() - start_time  # noqa: E731
    window = Window(lambda sums: sum_dict_over_ranks(ranks, sums, t.device))
    if t.log_window:
        window.restore(t.log_window, holds_sums=ranks.is_main)
    last_eval, bad_in_a_row, stop = {}, 0, GracefulStop()

    t.model.train()
    while True:
        now, stopping = agree(ranks, elapsed(), stop.signal is not None, t.device)  # rank 0's clock
        if t.step >= tc.max_steps or (budget is not None and now >= budget) or stopping:
            break
        lr = lr_at(t.step, tc.lr, tc.warmup_steps, max(t.step / tc.max_steps, now / budget if budget else 0.0))
        step_stats, grad_norm, finite = train_step(t, lr)
        t.step += 1
        bar.update(int(elapsed()) - bar.n if budget else 1)
        if not finite:
            bad_in_a_row += 1
            window.add({"skipped_steps": 1})
            log.echo(f"step {t.step}: non-finite loss or gradient, update skipped ({bad_in_a_row} in a row)", bar)
            if bad_in_a_row >= tc.max_bad_steps:
                bar.close()
                raise UsageError(f"stopped at step {t.step}: {bad_in_a_row} steps in a row had a non-finite loss "
                                 f"or gradient; lower train.lr (now {tc.lr:g}) and --resume from the last "
                                 "checkpoint")
            continue
        bad_in_a_row = 0
        for st in step_stats:
            window.add(st)
        window.add({"grad_norm": grad_norm, "steps": 1})

        if t.step % tc.log_every == 0:
            log.write(t.step, window.flush(lr, elapsed()), bar)
        if t.step % tc.eval_every == 0 and ranks.is_main:
            last_eval = _evaluate(t, elapsed(), log, bar)
        if t.step % tc.checkpoint_every == 0:
            _checkpoint(t, run, elapsed(), window)
    bar.close()
    stop.restore()
    if stopping:  # SIGINT / SIGTERM: the step finished; save it (the log window too) and leave quickly
        _checkpoint(t, run, elapsed(), window)
        log.echo(f"stopped by {(stop.signal or signal.SIGTERM).name} after step {t.step}; checkpoint written. "
                 f"Continue with: electra pretrain --out {run} --resume")
        return last_eval
    if window.steps:
        log.write(t.step, window.flush(lr, elapsed()), None)
    if t.step % tc.eval_every and ranks.is_main:
        last_eval = _evaluate(t, elapsed(), log, None)
    if t.step % tc.checkpoint_every:
        _checkpoint(t, run, elapsed(), window)
    log.echo(f"done: {t.step} steps in {elapsed() / 60:.1f} min; checkpoints in {run / 'checkpoints'}")
    return last_eval


def setup(cfg: Config, run: Path, data_dir, resume: bool, ranks: Dist) -> Trainer:
    """Threads, device, data, model and optimizer; with `resume`, the latest usable checkpoint's
    weights, optimizer and RNG state. Rank 0 writes the config as resolved now."""
    tc = cfg.train
    if tc.batch_size % (ranks.world_size * tc.grad_accum):
        raise UsageError(f"train.batch_size ({tc.batch_size}, the global batch) must be divisible by "
                         f"processes x train.grad_accum ({ranks.world_size} x {tc.grad_accum})")
    set_cpu_threads(tc.threads)
    device = resolve_device(tc.device)
    if device.type == "cuda" and ranks.enabled:
        device = torch.device("cuda", ranks.local_rank)
    autocast, precision = autocast_for(tc.precision, device)
    train_data, val_data = (PretrainingData(data_dir, split, cfg.data.seq_len, cfg.data.single_segment_prob,
                                            tc.seed) for split in ("train", "val"))
    if len(train_data) == 0:
        raise UsageError(f"{str(data_dir)!r} holds no training examples")
    if cfg.model.vocab_size != train_data.vocab_size:
        raise UsageError(f"model.vocab_size ({cfg.model.vocab_size}) differs from the data's tokenizer "
                         f"({train_data.vocab_size}); leave model.vocab_size unset for pretrain")

    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.objective).to(device)
    model.set_word_pieces(continuation_ids(load_tokenizer(data_dir)))
    if cfg.objective.word_swap_source == "corpus":  # (the config asks word_swap_prob > 0 with it)
        model.set_corpus_words(corpus_words(*corpus_tokens(data_dir, CORPUS_WORDS_TOKENS),
                                            model.continues_word.cpu().numpy()))
    optimizer = build_optimizer(model, tc)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step, elapsed_before, log_window = 0, 0.0, None
    if resume:
        remove_stale_temporaries(run)
        if not list_checkpoints(run):  # killed before its first checkpoint: start it again
            tqdm.write(f"no checkpoint in {run} yet: training from step 0")
        elif (ckpt := latest_valid_checkpoint(run, warn=tqdm.write)) is None:
            raise UsageError(f"no usable checkpoint in {str(run)!r} to resume from; start without --resume")
        else:
            state = load_checkpoint(ckpt, model, optimizer, restore_rng=True, verify=False)
            step, elapsed_before = state["step"], state.get("elapsed", 0.0)
            log_window = state.get("log_window")  # absent in checkpoints written before it was saved
    if step == 0 and cfg.model.word_init == "ppmi-svd":
        started = time.perf_counter()
        seen = init_word_vectors(model, data_dir, tc.seed)
        elapsed_before = time.perf_counter() - started  # part of the run's time (and of a time budget)
        if ranks.is_main:
            tqdm.write(f"word embeddings: PPMI-SVD vectors for {seen:,} tokens in {elapsed_before:.0f} s")
    if ranks.is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run / CONFIG_FILE, cfg.to_dict())  # as resolved now (a resume may extend it)
    wrapped = wrap(model, ranks, device)
    forward = torch.compile(wrapped) if tc.compile else wrapped
    return Trainer(cfg, ranks, device, autocast, precision, train_data, val_data, model, forward, optimizer,
                   scaler, step, elapsed_before, log_window)


def train_step(t: Trainer, lr: float) -> tuple[list[dict], torch.Tensor, bool]:
    """One optimizer step at `lr`: (per-micro-batch statistics, gradient norm, whether the update
    was applied). A non-finite loss or gradient skips the update (fp16's GradScaler skips and
    rescales itself); under DDP the decision rests on the all-reduced gradient alone, so every
    rank makes the same."""
    cfg, ranks, tc = t.cfg, t.ranks, t.cfg.train
    for group in t.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    seq_len = cfg.data.seq_len
    num_predictions = cfg.objective.predictions_per_sequence(seq_len)
    per_rank = t.per_rank
    micro = per_rank // tc.grad_accum

    # This rank's share of the step's global batch; noise is keyed by each example's global
    # stream position, so the result does not depend on how many processes share the batch.
    first = t.step * tc.batch_size + ranks.rank * per_rank
    batch = t.train_data.batch(stream_indices(len(t.train_data), tc.seed, first, per_rank))
    counts = loss_denominators(batch["input_ids"], cfg.objective.mask_prob, num_predictions, cfg.objective.rtd_tokens)
    n_pred, n_tok = (int(c) for c in sum_over_ranks(ranks, counts, t.device))  # the global denominators
    keys = example_keys(tc.seed, range(first, first + per_rank))
    step_stats = []
    for i in range(0, per_rank, micro):
        part = {k: v[i:i + micro].to(t.device, non_blocking=True) for k, v in batch.items()}
        noise = draw_noise(keys[i:i + micro], seq_len, num_predictions, t.device,
                           word_swaps=cfg.objective.word_swap_prob > 0)
        with no_sync(t.forward, ranks, last_micro_step=i + micro >= per_rank), t.autocast():
            out = t.forward(part["input_ids"], part["token_type_ids"], part["attention_mask"],
                            noise, num_predictions=n_pred, num_tokens=n_tok)
            # DDP averages gradients over ranks; the losses are sums over the global batch
            t.scaler.scale(out.loss * ranks.world_size).backward()
        step_stats.append({**out.stats, "loss": out.loss.detach()})
    t.scaler.unscale_(t.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), tc.clip_norm)
    loss = sum(st["loss"] for st in step_stats)
    finite = t.precision == "fp16" or bool(torch.isfinite(grad_norm) & (torch.isfinite(loss) | ranks.enabled))
    if finite:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    return step_stats, grad_norm.detach(), finite


def _describe(t: Trainer) -> str:
    sizes = (f"masked LM {count_parameters(t.model):,}" if t.cfg.objective.kind == "mlm" else
             f"discriminator {count_parameters(t.model.discriminator):,}, generator "
             f"{count_parameters(t.model.generator):,} (embeddings shared)")
    return (f"params: {sizes} | device {t.device} {t.precision} | {len(t.train_data):,} train examples of "
            f"{t.cfg.data.seq_len} tokens")


def _evaluate(t: Trainer, elapsed: float, log, bar) -> dict:
    if len(t.val_data) == 0:
        return {}
    cfg = t.cfg
    n = min(len(t.val_data), cfg.train.eval_batches * cfg.train.batch_size)
    with t.autocast():
        metrics = evaluate_rtd(t.model, t.val_data, range(n), cfg, t.device, batch_size=cfg.train.batch_size)
    t.model.train()
    log.write(t.step, {"split": "val", **metrics, "elapsed": elapsed}, bar, prefix="eval")
    return metrics


def _checkpoint(t: Trainer, run: Path, elapsed: float, window: Window):
    """Rank 0 writes a checkpoint, with the open log window, or (disk full, no permission) stops
    clearly, leaving the previous one intact. Every rank calls it: the window's sums are summed
    over ranks first."""
    log_window = window.state()
    if not t.ranks.is_main:
        return
    try:
        save_checkpoint(run, t.step, t.model, t.optimizer,
                        {"elapsed": elapsed, "log_window": log_window, "config": t.cfg.to_dict()},
                        t.cfg.train.keep_checkpoints)
    except OSError as e:
        previous = latest_checkpoint(run)
        kept = f"{previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise UsageError(f"could not write the checkpoint of step {t.step} ({e.strerror or e}); {kept}. "
                         "Free space or fix permissions, then continue with --resume") from e


class GracefulStop:
    """SIGINT / SIGTERM set `signal`; the loop finishes its step, checkpoints and exits 0. A second
    signal interrupts at once."""

    def __init__(self):
        self.signal: signal.Signals | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum)
        tqdm.write(f"{self.signal.name}: finishing the current step, then saving a checkpoint")

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

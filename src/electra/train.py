"""The pre-training loop: `pretrain(cfg, run_dir, data_dir)`.

One step reads top to bottom: set the learning rate, take the step's examples from the endless
shuffled stream, run the micro-batches (gradients accumulated, losses normalised by the whole
step's counts), clip, step, log, evaluate and checkpoint on their intervals. Everything the step
depends on (data position, masking, sampling) derives from (seed, step), and the RNG state is
checkpointed, so a resumed run reproduces an uninterrupted one bit for bit on CPU.
Schedule and optimizer follow google-research/electra: AdamW (no decay on biases and LayerNorm),
linear warmup times linear decay to zero, global-norm clipping at 1.0.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from electra.checkpoint import (CONFIG_FILE, latest_checkpoint, latest_valid_checkpoint, load_checkpoint,
                                remove_stale_temporaries, replace_dir, save_checkpoint, temp_dir_beside,
                                write_json_atomic,
                                write_text_atomic)
from electra.config import Config, apply_overrides
from electra.distributed import Dist, agree, no_sync, sum_dict_over_ranks, sum_over_ranks, wrap
from electra.data import COUNTS_FILE, PretrainingData, load_index, prepare_corpus, stream_indices
from electra.errors import UsageError
from electra.evaluate import evaluate_rtd
from electra.objective import (build_model, count_parameters, draw_noise, example_keys, prediction_counts,
                               summarize)
from electra.tokenizer import PAD_ID, TOKENIZER_FILE, load_tokenizer, train_tokenizer

METRICS_FILE, RUN_FILE = "metrics.jsonl", "run.json"


def lr_at(step: int, peak: float, warmup_steps: int, progress: float) -> float:
    """Official ELECTRA schedule: peak * min(1, (step+1)/warmup) * (1 - progress), where progress
    is the share of the run done (steps or wall-clock, whichever is further). The +1 spends no step
    at lr 0, which matters when optimizer steps are scarce."""
    return peak * min(1.0, (step + 1) / warmup_steps) * max(0.0, 1.0 - progress)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} was asked for but CUDA is not available; use --set train.device=cpu")
    return torch.device(name)


def set_cpu_threads(threads: int | None = None) -> None:
    """Flush denormals to zero, then set torch's intra-op threads (if given). Call it before the
    first parallel op, so that the worker threads inherit the setting: peaked attention in a trained
    model makes the CPU backward produce denormals, which took pre-training steps from 290 to 520 ms
    on `tiny` and a trained encoder's fine-tuning steps from 67-77 to 59-66 ms (docs/LOG.md)."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """glibc only, process-wide: serve every allocation from the heap and never trim it, so that a
    step's tensors reuse pages already mapped. Otherwise tensors above glibc's mmap threshold (the
    generator's B x N x V ones always: the ceiling is 32 MB) are mapped afresh and page-faulted on
    every step, ~15 ms each for 37 MB; freed memory stays with the process for the next step instead.
    Returns whether the setting took (False off glibc)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def autocast_for(precision: str, device: torch.device):
    """A context manager: bf16/fp16 autocast on CUDA, nothing on CPU fp32."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (official: exclude LayerNorm and bias)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_eps, fused=True)


def count_targets(input_ids: torch.Tensor, mask_prob: float, num_predictions: int) -> tuple[int, int]:
    """A step's number of predictions and of real tokens: the losses' denominators."""
    return (int(prediction_counts(input_ids, mask_prob, num_predictions).sum()),
            int((input_ids != PAD_ID).sum()))


def pretrain(cfg: Config, run_dir, data_dir, resume: bool = False, show_progress: bool = True,
             ranks: Dist | None = None) -> dict:
    """Pre-train (or continue) the run in `run_dir`; returns the last evaluation's metrics (on rank 0).
    Under torchrun, `ranks` says which process this is: each takes its share of every step's
    global batch, and only rank 0 writes."""
    run = Path(run_dir)
    tc = cfg.train
    ranks = ranks or Dist()
    if tc.batch_size % (ranks.world_size * tc.grad_accum):
        raise UsageError(f"train.batch_size ({tc.batch_size}, the global batch) must be divisible by "
                         f"processes x train.grad_accum ({ranks.world_size} x {tc.grad_accum})")
    set_cpu_threads(tc.threads)
    device = resolve_device(tc.device)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda" and ranks.enabled:
        device = torch.device("cuda", ranks.local_rank)
    autocast, precision = autocast_for(tc.precision, device)
    train_data = PretrainingData(data_dir, "train", cfg.data.seq_len, cfg.data.single_segment_prob, tc.seed)
    val_data = PretrainingData(data_dir, "val", cfg.data.seq_len, cfg.data.single_segment_prob, tc.seed)
    if len(train_data) == 0:
        raise UsageError(f"{str(data_dir)!r} holds no training examples")
    if cfg.model.vocab_size != train_data.vocab_size:
        raise UsageError(f"model.vocab_size ({cfg.model.vocab_size}) differs from the data's tokenizer "
                         f"({train_data.vocab_size}); leave model.vocab_size unset for pretrain")

    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.objective).to(device)
    optimizer = build_optimizer(model, tc)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step, elapsed_before = 0, 0.0
    if resume:
        remove_stale_temporaries(run)
        ckpt = latest_valid_checkpoint(run, warn=tqdm.write)
        if ckpt is None:
            raise UsageError(f"no usable checkpoint in {str(run)!r} to resume from; start without --resume")
        state = load_checkpoint(ckpt, model, optimizer, restore_rng=True, verify=False)
        step, elapsed_before = state["step"], state.get("elapsed", 0.0)
    if ranks.is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run / CONFIG_FILE, cfg.to_dict())  # as resolved now (a resume may extend it)
    wrapped = wrap(model, ranks, device)
    forward = torch.compile(wrapped) if tc.compile else wrapped

    seq_len = cfg.data.seq_len
    num_predictions = cfg.objective.predictions_per_sequence(seq_len)
    per_rank = tc.batch_size // ranks.world_size
    micro = per_rank // tc.grad_accum
    budget = tc.time_budget_seconds
    log = MetricsLog(run / METRICS_FILE, step if resume else 0) if ranks.is_main else NullLog()
    sizes = (f"masked LM {count_parameters(model):,}" if cfg.objective.kind == "mlm" else
             f"discriminator {count_parameters(model.discriminator):,}, generator "
             f"{count_parameters(model.generator):,} (embeddings shared)")
    log.echo(f"params: {sizes} | device {device} {precision} | {len(train_data):,} train examples of "
             f"{seq_len} tokens")
    bar = tqdm(total=int(budget) if budget else tc.max_steps, initial=0 if budget else step,
               unit="s" if budget else "step", disable=not (show_progress and ranks.is_main), dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
    start_time = time.monotonic()
    elapsed = lambda: elapsed_before + time.monotonic() - start_time  # noqa: E731
    window = Window(lambda sums: sum_dict_over_ranks(ranks, sums, device))
    last_eval: dict = {}
    bad_in_a_row = 0
    stop = GracefulStop()

    def checkpoint():
        if ranks.is_main:
            save_or_explain(run, step, model, optimizer, {"elapsed": elapsed(), "config": cfg.to_dict()},
                            tc.keep_checkpoints)

    model.train()
    while True:
        now, stopping = agree(ranks, elapsed(), stop.signal is not None, device)  # rank 0's clock
        if step >= tc.max_steps or (budget is not None and now >= budget) or stopping:
            break
        progress = max(step / tc.max_steps, now / budget if budget else 0.0)
        lr = lr_at(step, tc.lr, tc.warmup_steps, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # This rank's share of the step's global batch; noise is keyed by each example's global
        # stream position, so the result does not depend on how many processes share the batch.
        first = step * tc.batch_size + ranks.rank * per_rank
        positions = range(first, first + per_rank)
        batch = train_data.batch(stream_indices(len(train_data), tc.seed, first, per_rank))
        counts = count_targets(batch["input_ids"], cfg.objective.mask_prob, num_predictions)
        n_pred, n_tok = (int(c) for c in sum_over_ranks(ranks, counts, device))  # the global denominators
        keys = example_keys(tc.seed, positions)
        step_stats = []
        for i in range(0, per_rank, micro):
            part = {k: v[i:i + micro].to(device, non_blocking=True) for k, v in batch.items()}
            noise = draw_noise(keys[i:i + micro], seq_len, num_predictions, device)
            with no_sync(wrapped, ranks, last_micro_step=i + micro >= per_rank), autocast():
                out = forward(part["input_ids"], part["token_type_ids"], part["attention_mask"],
                              noise, num_predictions=n_pred, num_tokens=n_tok)
                # DDP averages gradients over ranks; the losses are sums over the global batch
                scaler.scale(out.loss * ranks.world_size).backward()
            step_stats.append({**out.stats, "loss": out.loss.detach()})
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        # A non-finite loss or gradient skips the update (fp16's GradScaler skips and rescales itself).
        # Under DDP the decision rests on the all-reduced gradient alone, so every rank makes the same.
        loss = sum(st["loss"] for st in step_stats)
        finite = precision == "fp16" or bool(torch.isfinite(grad_norm) & (torch.isfinite(loss) | ranks.enabled))
        if finite:
            scaler.step(optimizer)
            scaler.update()
            for st in step_stats:
                window.add(st)
            window.add({"grad_norm": grad_norm.detach(), "steps": 1})
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(int(elapsed()) - bar.n if budget else 1)
        if not finite:
            bad_in_a_row += 1
            window.add({"skipped_steps": 1})
            log.echo(f"step {step}: non-finite loss or gradient, update skipped ({bad_in_a_row} in a row)", bar)
            if bad_in_a_row >= tc.max_bad_steps:
                bar.close()
                raise UsageError(f"stopped at step {step}: {bad_in_a_row} steps in a row had a non-finite loss "
                                 f"or gradient; lower train.lr (now {tc.lr:g}) and --resume from the last "
                                 "checkpoint")
            continue
        bad_in_a_row = 0

        if step % tc.log_every == 0:
            log.write(step, window.flush(lr, elapsed()), bar)
        if step % tc.eval_every == 0 and ranks.is_main:
            last_eval = _evaluate(model, val_data, cfg, device, autocast, step, elapsed(), log, bar)
        if step % tc.checkpoint_every == 0:
            checkpoint()
    bar.close()
    stop.restore()
    if window.steps:
        log.write(step, window.flush(lr, elapsed()), None)
    if stopping:  # SIGINT / SIGTERM: the step finished; save it and leave quickly
        checkpoint()
        log.echo(f"stopped by {(stop.signal or signal.SIGTERM).name} after step {step}; checkpoint written. Continue with: "
                 f"electra pretrain --out {run} --resume")
        return last_eval
    if step % tc.eval_every and ranks.is_main:
        last_eval = _evaluate(model, val_data, cfg, device, autocast, step, elapsed(), log, None)
    if step % tc.checkpoint_every:
        checkpoint()
    log.echo(f"done: {step} steps in {elapsed() / 60:.1f} min; checkpoints in {run / 'checkpoints'}")
    return last_eval


def save_or_explain(run: Path, step: int, model, optimizer, state: dict, keep: int):
    """A checkpoint, or (disk full, no permission) a clear stop that leaves the previous one intact."""
    try:
        save_checkpoint(run, step, model, optimizer, state, keep)
    except OSError as e:
        previous = latest_checkpoint(run)
        kept = f"{previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise UsageError(f"could not write the checkpoint of step {step} ({e.strerror or e}); {kept}. "
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


def _evaluate(model, data, cfg, device, autocast, step, elapsed, log, bar) -> dict:
    if len(data) == 0:
        return {}
    n = min(len(data), cfg.train.eval_batches * cfg.train.batch_size)
    with autocast():
        metrics = evaluate_rtd(model, data, range(n), cfg, device, batch_size=cfg.train.batch_size)
    model.train()
    log.write(step, {"split": "val", **metrics, "elapsed": elapsed}, bar, prefix="eval")
    return metrics


class Window:
    """Sums of step statistics between log lines (tensors until flushed: one host sync per log).
    `reduce` sums them over ranks at the flush (identity in a single process)."""

    def __init__(self, reduce=None):
        self.reduce = reduce or (lambda sums: {k: float(v) for k, v in sums.items()})
        self.sums: dict[str, torch.Tensor | float] = {}
        self.steps = 0
        self.start = time.monotonic()

    def add(self, stats: dict):
        self.steps += int(stats.get("steps", 0))
        for k, v in stats.items():
            if k != "steps":
                self.sums[k] = self.sums.get(k, 0) + (v.detach().float() if torch.is_tensor(v) else v)

    def flush(self, lr: float, elapsed: float) -> dict:
        sums = self.reduce({**self.sums, "steps": self.steps})
        seconds = max(time.monotonic() - self.start, 1e-9)
        steps = max(self.steps, 1)
        ranks = max(sums.pop("steps") / steps, 1)  # every rank counts the same steps
        record = {"loss": sums["loss"] / steps, **summarize(sums), "lr": lr,
                  "grad_norm": sums["grad_norm"] / (steps * ranks),
                  "tokens_per_s": sums["num_tokens"] / seconds, "elapsed": elapsed,
                  "skipped_steps": int(sums.get("skipped_steps", 0) / ranks)}
        self.__init__(self.reduce)
        return record


class NullLog:
    """What ranks other than 0 log: nothing."""

    def write(self, *args, **kwargs):
        pass

    def echo(self, *args, **kwargs):
        pass


class MetricsLog:
    """`metrics.jsonl` (one JSON record per log or eval step) and the one-line console echo."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if resume_step and path.exists():  # drop records past the checkpoint we resume from
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, step: int, record: dict, bar, prefix: str = "step"):
        record = {"step": step, **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.echo(format_record(record, prefix), bar)

    @staticmethod
    def echo(text: str, bar=None):
        (bar.write if bar is not None else tqdm.write)(text)


def _step_of(line: str) -> float:
    """A metrics line's step; a line cut short by a crash counts as past every checkpoint."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return float("inf")


def format_record(r: dict, prefix: str) -> str:
    def f(key, fmt):
        v = r.get(key)
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    if prefix == "eval":
        return (f"eval {r['step']:>6} | gen acc@mask {f('gen_accuracy', '.3f')} | disc loss "
                f"{f('disc_loss', '.4f')} (label entropy {f('disc_label_entropy', '.4f')}) | acc "
                f"{f('disc_accuracy', '.3f')} P {f('disc_precision', '.3f')} R {f('disc_recall', '.3f')}"
                f" | AUC {f('disc_auc', '.4f')}")
    return (f"step {r['step']:>6} | loss {f('loss', '.3f')} | gen {f('gen_loss', '.3f')} acc@mask "
            f"{f('gen_accuracy', '.3f')} | disc {f('disc_loss', '.4f')} (H {f('disc_label_entropy', '.4f')})"
            f" | lr {f('lr', '.2e')} | gnorm {f('grad_norm', '.2f')} | {f('tokens_per_s', ',.0f')} tok/s")


def start_run(cfg: Config, run_dir, corpus=None, data_dir=None, show_progress: bool = True):
    """Make a run directory: tokenizer + prepared data (from `corpus`) or a link to `data_dir`.
    Built under a temporary name and renamed, so a failed setup leaves nothing behind.
    Returns (cfg with the tokenizer's vocabulary size, data directory)."""
    run = Path(run_dir)
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise UsageError(f"{str(run)!r} already exists; continue it with --resume, or choose a new --out")
    tmp = temp_dir_beside(run)
    try:
        if corpus:
            d = cfg.data
            stats = train_tokenizer(corpus, tmp, d.vocab_size, d.lowercase, d.normalization, d.doc_sep,
                                    show_progress=show_progress)
            if stats.replaced:
                tqdm.write(f"note: {stats.replaced} undecodable byte sequences were replaced by U+FFFD")
            _prepare(cfg, corpus, tmp, show_progress)
            data = run / "data"
        else:
            load_index(data_dir)
            data = Path(data_dir).resolve()
            shutil.copyfile(data / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        shutil.copyfile((tmp / "data" if corpus else data) / COUNTS_FILE, tmp / COUNTS_FILE)
        vocab = load_tokenizer(tmp).get_vocab_size()
        cfg = apply_overrides(cfg, {"model.vocab_size": vocab})
        (tmp / RUN_FILE).write_text(json.dumps({"data_dir": str(data)}, indent=2))
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
        replace_dir(tmp, run)  # `run` is absent or empty, checked above
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg, data


def _prepare(cfg: Config, corpus, run_dir: Path, show_progress: bool) -> Path:
    """Prepare `corpus` with the tokenizer in `run_dir` into `run_dir/data`, as `cfg.data` says."""
    d = cfg.data
    prepare_corpus(corpus, run_dir, run_dir / "data", d.doc_sep, d.val_fraction, d.val_max_tokens,
                   show_progress=show_progress)
    return run_dir / "data"


def run_data_dir(run_dir) -> Path | None:
    """The prepared data a run trains on (recorded by start_run or attach_data); None if it has none
    yet (an imported run)."""
    run = Path(run_dir)
    if (run / "data").is_dir():
        return run / "data"
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

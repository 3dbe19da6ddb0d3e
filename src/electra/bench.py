"""`electra bench`: the speed of full pre-training steps (forward, backward, optimizer) on
synthetic token ids, with model FLOPs, the measured matrix-multiply peak and their ratio (MFU),
and optionally the same measurement for the Hugging Face `transformers` ELECTRA pair.

The HF reference is what a user would wire up with `transformers` (as richarddwang/electra_pytorch
does): `ElectraForMaskedLM` + `ElectraForPreTraining` of the same sizes sharing their embeddings, the
generator's vocabulary head over the whole sequence (as `ElectraForMaskedLM` computes it), Gumbel
sampling at the masked positions, the same AdamW. It needs `transformers`, a test dependency only.
Ours, the reference and the matrix multiply are timed in turns, one call of each per round, so that
a machine whose speed drifts during the run affects all three alike.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from electra.config import Config, apply_overrides, generator_config, preset_config
from electra.errors import UsageError
from electra.export import hf_config
from electra.flops import training_flops_per_token
from electra.noise import draw_noise, example_keys
from electra.objective import build_model, corpus_words, mask_tokens
from electra.optim import build_optimizer
from electra.runtime import autocast_for, resolve_device
from electra.tokenizer import CLS_ID, SEP_ID


@dataclass(frozen=True)
class BenchConfig:
    """What `electra bench` times: a preset's model on synthetic batches (the official vocabulary
    by default), `steps` timed steps after `warmup` untimed ones."""

    preset: str = "small"
    device: str = "auto"
    dtype: str = "fp32"  # fp32, bf16 or fp16 (autocast on CUDA)
    compile: str | None = None  # None, or a torch.compile mode: default, reduce-overhead, max-autotune
    batch: int = 16
    seq_len: int = 128
    vocab_size: int = 30522
    steps: int = 10
    warmup: int = 3
    objective: str = "electra"
    reference: str | None = None  # "hf": also time the transformers ELECTRA pair

    def model_config(self, overrides: dict | None = None) -> Config:
        return apply_overrides(preset_config(self.preset), {
            "train.batch_size": self.batch, "data.seq_len": self.seq_len, "model.vocab_size": self.vocab_size,
            "objective.kind": self.objective, **(overrides or {})})


def synthetic_batch(batch: int, seq_len: int, vocab_size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    ids[:, seq_len // 2] = SEP_ID
    types = torch.zeros_like(ids)
    types[:, seq_len // 2 + 1:] = 1
    return ids.to(device), types.to(device), torch.ones_like(ids, dtype=torch.bool, device=device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(steps: dict, n: int, device) -> dict:
    """Seconds per call of each function, timed in turns (one call of each per round, n rounds), so
    that the machine's speed drifting during the run (a shared virtual machine's does, by 25% from
    minute to minute) weighs on every figure alike, and their ratios stay fair."""
    total = dict.fromkeys(steps, 0.0)
    for _ in range(n):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            total[name] += time.perf_counter() - start
    return {name: t / n for name, t in total.items()}


def _warm(step, warmup: int, device):
    for _ in range(warmup):
        step()
    _sync(device)


def matmul_step(device, dtype: torch.dtype, size: int | None = None, repeats: int = 3):
    """(a function of `repeats` large square matrix multiplies, its FLOPs): the denominator of MFU."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def step():
        for _ in range(repeats):
            a @ b

    return step, 2 * size ** 3 * repeats


def ours_step(cfg: Config, device, precision: str, compile: bool | str):
    """One optimizer step of our model on a synthetic batch, fresh noise each call."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.objective).to(device).train()
    B, T, V = cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size
    ids, types, mask = synthetic_batch(B, T, V, device)
    swaps = cfg.objective.word_swap_prob > 0
    model.set_word_pieces([])  # synthetic ids: every token a word of its own
    if swaps and cfg.objective.word_swap_source == "corpus":  # the batch's own tokens are the corpus
        flat = ids.flatten().cpu().numpy()
        model.set_corpus_words(corpus_words(flat, np.zeros_like(flat), model.continues_word.cpu().numpy()))
    optimizer = build_optimizer(model, cfg.train)
    # compile: True / "default", or a torch.compile mode ("reduce-overhead" adds CUDA graphs)
    mode = compile if isinstance(compile, str) and compile != "default" else None
    forward = torch.compile(model, mode=mode) if compile else model
    autocast, _ = autocast_for(precision, device)
    N = cfg.objective.predictions_per_sequence(T)
    done = [0]

    def step():  # fresh noise per step, drawn as the training loop draws it
        k, done[0] = done[0], done[0] + 1
        noise = draw_noise(example_keys(0, range(k * B, (k + 1) * B)), T, N, device, word_swaps=swaps)
        with autocast():
            out = forward(ids, types, mask, noise)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_step(cfg: Config, device, precision: str):
    """One optimizer step of the `transformers` ELECTRA pair, same sizes and batch."""
    import transformers

    m, g = cfg.model, generator_config(cfg.model, cfg.objective)
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig.from_dict(hf_config(m, "ElectraForPreTraining"))).to(device).train()
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig.from_dict(hf_config(g, "ElectraForMaskedLM"))).to(device).train()
    gen.electra.embeddings = disc.electra.embeddings  # shared, as ELECTRA does
    params = list({id(p): p for p in list(disc.parameters()) + list(gen.parameters())}.values())
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, eps=1e-6, weight_decay=cfg.train.weight_decay)
    autocast, _ = autocast_for(precision, device)
    B, T, V = cfg.train.batch_size, cfg.data.seq_len, m.vocab_size
    ids, types, mask = synthetic_batch(B, T, V, device)
    N = cfg.objective.predictions_per_sequence(T)

    def step():  # noise drawn in batch, as such a training script does (Gumbel over the vocabulary)
        select, keep = torch.rand(B, T, device=device), torch.rand(B, N, device=device)
        gumbel = torch.rand(B, N, V, device=device)
        masked = mask_tokens(ids, select, keep, cfg.objective.mask_prob)
        labels = torch.full_like(ids, -100).scatter(1, masked.positions, torch.where(masked.weights, masked.originals, -100))
        with autocast():
            logits = gen(input_ids=masked.input_ids, token_type_ids=types, attention_mask=mask).logits  # (B, T, V)
            gen_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
            with torch.no_grad():
                at = logits.gather(1, masked.positions[..., None].expand(-1, -1, V)).float()
                sampled = (at - torch.log(-torch.log(gumbel.clamp(1e-9, 1 - 1e-9)))).argmax(-1)
            disc_ids = masked.input_ids.scatter(1, masked.positions, torch.where(masked.weights, sampled, masked.originals))
            is_replaced = (disc_ids != ids).float()
            disc_logits = disc(input_ids=disc_ids, token_type_ids=types, attention_mask=mask).logits
            loss = gen_loss + cfg.objective.disc_weight * F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_bench(bench: BenchConfig, overrides: dict | None = None) -> dict:
    """Time `bench` (the model config with `overrides` applied): ours, the matmul peak and, if
    asked, the transformers pair, in turns."""
    if bench.reference == "hf":
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            raise UsageError("--reference hf needs `transformers` (pip install transformers)")
    cfg = bench.model_config(overrides)
    dev = resolve_device(bench.device)
    precision, compile, steps, warmup, reference = bench.dtype, bench.compile, bench.steps, bench.warmup, bench.reference
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    timed = {"ours": ours_step(cfg, dev, precision, compile)}
    _warm(timed["ours"], warmup, dev)
    peak_memory = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"  # ours alone
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    matmul_dtype = torch.bfloat16 if precision in ("bf16", "auto") and dev.type == "cuda" else torch.float32
    timed["matmul"], matmul_flops = matmul_step(dev, matmul_dtype)
    _warm(timed["matmul"], 1, dev)
    if reference == "hf":
        timed["hf"] = hf_step(replace(cfg, objective=replace(cfg.objective, kind="electra")), dev, precision)
        _warm(timed["hf"], warmup, dev)
    seconds = _time_interleaved(timed, steps, dev)
    flops_per_token = training_flops_per_token(cfg)
    peak = matmul_flops / seconds["matmul"]
    result = {
        "device": str(dev), "precision": precision, "compile": compile, "threads": torch.get_num_threads(),
        "batch_size": cfg.train.batch_size, "seq_len": cfg.data.seq_len, "vocab_size": cfg.model.vocab_size,
        "ms_per_step": 1000 * seconds["ours"], "tokens_per_s": tokens / seconds["ours"],
        "peak_memory_bytes": int(peak_memory), "flops_per_token": flops_per_token,
        "achieved_flops": flops_per_token * tokens / seconds["ours"],
        "matmul_peak_flops": peak, "mfu": flops_per_token * tokens / seconds["ours"] / peak,
    }
    if reference == "hf":
        result["reference_tokens_per_s"] = tokens / seconds["hf"]
        result["speedup_vs_reference"] = seconds["hf"] / seconds["ours"]
    return result


def format_result(r: dict, bench: BenchConfig) -> str:
    """The bench's figures in a few lines."""
    compiled = f" compiled ({bench.compile})" if bench.compile else ""
    lines = [f"{bench.preset} {r['device']} {r['precision']}{compiled}, {r['threads']} threads, batch "
             f"{r['batch_size']} x {r['seq_len']}, vocab {r['vocab_size']}:",
             f"  {r['tokens_per_s']:,.0f} tokens/s, {r['ms_per_step']:.1f} ms/step, peak memory "
             f"{r['peak_memory_bytes'] / 2**20:,.0f} MiB",
             f"  {r['flops_per_token'] / 1e6:,.1f} MFLOPs/token -> {r['achieved_flops'] / 1e9:,.1f} GFLOP/s; "
             f"matmul peak {r['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s; MFU {r['mfu']:.3f}"]
    if "reference_tokens_per_s" in r:
        lines.append(f"  transformers ELECTRA pair: {r['reference_tokens_per_s']:,.0f} tokens/s; ours is "
                     f"{r['speedup_vs_reference']:.2f}x")
    return "\n".join(lines)

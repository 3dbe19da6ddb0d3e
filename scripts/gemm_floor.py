"""How far the CPU step's ratio to the transformers pair could go (issue 6): per round, the pair's
step, ours, and ours under the profiler, in one process. Two bounds on the ratio: everything but
the GEMMs free; and perfect fusion, where only the GEMMs and the arithmetic that any implementation
must do (GELU, LayerNorm, softmax, log-softmax, the sampling CDF, AdamW, the gradient norm, the
embedding lookups), timed at ATen's own speed, remain, and every copy, add, multiply, bias sum,
dropout mask, autograd node and Python line between them is free.

    python scripts/gemm_floor.py --rounds 4 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from electra.bench import _warm, hf_step, ours_step
from electra.config import apply_overrides, preset_config
from electra.runtime import keep_freed_memory, set_cpu_threads

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
# ATen's element-wise kernels here are compute-bound, not memory-bound: a hand-written fused
# bias + GELU (auto-vectorised C, AVX-512) took 3.7 ms forward and backward on 2,048 x 1,024 where
# ATen's separate bias copy, GELU, GELU backward and bias sum took 3.0 (docs/LOG.md), so their
# ATen times stand in for what a fused kernel would still spend.
ARITHMETIC = {"aten::gelu", "aten::gelu_backward", "aten::native_layer_norm", "aten::native_layer_norm_backward",
              "aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax", "aten::exp", "aten::cumsum_",
              "aten::searchsorted", "aten::amax", "aten::_fused_adamw_", "aten::linalg_vector_norm",
              "aten::binary_cross_entropy_with_logits", "aten::embedding_dense_backward", "aten::index_select",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}


def timed_ms(step) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab-size", type=int, default=None, help="as `electra bench --vocab-size`")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_cpu_threads(args.threads)
    keep_freed_memory()  # as `electra bench`, for both
    overrides = {"train.batch_size": args.batch, "data.seq_len": 128}
    if args.vocab_size:
        overrides["model.vocab_size"] = args.vocab_size
    cfg = apply_overrides(preset_config(args.preset), overrides)
    cpu = torch.device("cpu")
    ours, hf = ours_step(cfg, cpu, "fp32", False), hf_step(cfg, cpu, "fp32")
    _warm(ours, 3, cpu)
    _warm(hf, 3, cpu)
    for r in range(args.rounds):
        hf_ms, ours_ms = timed_ms(hf), timed_ms(ours)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled_ms = timed_ms(ours)
        ops = prof.key_averages()
        gemm_ms = sum(e.self_cpu_time_total for e in ops if e.key in GEMMS) / 1000
        arithmetic_ms = sum(e.self_cpu_time_total for e in ops if e.key in ARITHMETIC) / 1000
        hf_ms = (hf_ms + timed_ms(hf)) / 2  # the pair before and after ours, against drift
        print(f"round {r}: transformers pair {hf_ms:.0f} ms, ours {ours_ms:.0f} ms ({hf_ms / ours_ms:.2f}x); "
              f"ours profiled {profiled_ms:.0f} ms, of which GEMMs {gemm_ms:.0f} ms; "
              f"bound if all else took no time {hf_ms / gemm_ms:.2f}x; other arithmetic {arithmetic_ms:.0f} ms, "
              f"bound with perfect fusion {hf_ms / (gemm_ms + arithmetic_ms):.2f}x", flush=True)


if __name__ == "__main__":
    main()

"""How far the CPU step's ratio to the transformers pair could go if everything but its GEMMs took
no time (issue 6): per round, the pair's step, ours, and ours under the profiler, in one process.

    python scripts/gemm_floor.py --rounds 4 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from electra.bench import _warm, hf_step, ours_step
from electra.config import apply_overrides, preset_config
from electra.train import keep_freed_memory, set_cpu_threads

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def timed_ms(step) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_cpu_threads(args.threads)
    keep_freed_memory()  # as `electra bench`, for both
    cfg = apply_overrides(preset_config(args.preset), {"train.batch_size": args.batch, "data.seq_len": 128})
    cpu = torch.device("cpu")
    ours, hf = ours_step(cfg, cpu, "fp32", False), hf_step(cfg, cpu, "fp32")
    _warm(ours, 3, cpu)
    _warm(hf, 3, cpu)
    for r in range(args.rounds):
        hf_ms, ours_ms = timed_ms(hf), timed_ms(ours)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled_ms = timed_ms(ours)
        gemm_ms = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in GEMMS) / 1000
        hf_ms = (hf_ms + timed_ms(hf)) / 2  # the pair before and after ours, against drift
        print(f"round {r}: transformers pair {hf_ms:.0f} ms, ours {ours_ms:.0f} ms ({hf_ms / ours_ms:.2f}x); "
              f"ours profiled {profiled_ms:.0f} ms, of which GEMMs {gemm_ms:.0f} ms; "
              f"bound if all else took no time {hf_ms / gemm_ms:.2f}x", flush=True)


if __name__ == "__main__":
    main()

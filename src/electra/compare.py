"""`electra compare`: the paper's claim on your own data and budget. ELECTRA and BERT's masked LM
pre-train with the same wall-clock budget on the same tokenizer and prepared corpus; both, and a
random initialisation of the same encoder, are fine-tuned on a task with several seeds. Writes
`OUT/results.json` (per-seed dev metric, median, pre-training FLOPs and tokens for `electra`, `mlm`
and `scratch`) and `OUT/report.html` with the curves of both runs against steps, time and FLOPs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from electra.atomic import require_empty_dir
from electra.config import Config, apply_overrides, preset_config
from electra.errors import UsageError
from electra.finetune import FinetuneConfig, StartingPoint, finetune, starting_point
from electra.flops import training_flops_per_token
from electra.report import downstream_result, load_history, write_report
from electra.rundir import start_run
from electra.tasks import GLUE, load_task
from electra.tokenizer import load_tokenizer
from electra.train import pretrain


def compare(corpus, budget: str, task: str, task_dir, out_dir, seeds=(1, 2, 3), preset: str = "tiny",
            overrides: dict | None = None, epochs: int | None = None, show_progress: bool = True) -> dict:
    out = require_empty_dir(out_dir)
    if task not in GLUE:
        raise UsageError(f"--task {task!r}: compare runs a GLUE task ({', '.join(GLUE)})")
    spec = GLUE[task]
    task_data = load_task(spec, task_dir)  # fail on a bad task before pre-training
    base = apply_overrides(preset_config(preset), {**(overrides or {}), "train.time_budget": budget})

    runs = {"electra": out / "electra", "mlm": out / "mlm"}
    cfg, data = start_run(base, runs["electra"], corpus=corpus, show_progress=show_progress)
    pretrain(cfg, runs["electra"], data, show_progress=show_progress)
    mlm_cfg, _ = start_run(apply_overrides(base, {"objective.kind": "mlm"}), runs["mlm"], data_dir=data)
    pretrain(mlm_cfg, runs["mlm"], data, show_progress=show_progress)

    ft_cfg = FinetuneConfig(epochs=epochs)
    results = {}
    for name in ("electra", "mlm", "scratch"):
        if name in runs:
            start = replace(starting_point(runs[name]), source=name, size=preset)
        else:  # the same encoder from random weights
            start = StartingPoint(load_tokenizer(runs["electra"]), cfg.model, None, preset, name)
        report = finetune(spec, task_data, ft_cfg, start, out / "finetune" / name, list(seeds),
                          device=cfg.train.device, show_progress=show_progress)  # where pre-training ran
        results[name] = {**downstream_result(report),
                         **(_pretraining_cost(runs[name]) if name in runs else {"pretrain_flops": 0,
                                                                                  "pretrain_tokens": 0})}
    (out / "results.json").write_text(json.dumps({"task": task, "budget": budget, "preset": preset,
                                                  "results": results}, indent=2))
    write_report(list(runs.values()), out, results,
                 title=f"ELECTRA vs masked LM, {budget} each, {task} dev {spec.metric}")
    return results


def _pretraining_cost(run: Path) -> dict:
    history = load_history(run)
    cfg: Config = history["cfg"]
    steps = history["train"][-1]["step"] if history["train"] else 0
    tokens = steps * cfg.train.batch_size * cfg.data.seq_len
    return {"pretrain_steps": steps, "pretrain_tokens": tokens,
            "pretrain_flops": tokens * training_flops_per_token(cfg)}

"""`electra compare`: the paper's claim on your own data and budget. ELECTRA and BERT's masked LM
pre-train with the same wall-clock budget on the same tokenizer and prepared corpus; both, and a
random initialisation of the same encoder, are fine-tuned on a task with several seeds. Writes
`OUT/results.json` (per-seed dev metric, median, pre-training FLOPs and tokens for `electra`, `mlm`
and `scratch`) and `OUT/report.html` with the curves of both runs against steps, time and FLOPs.
"""

from __future__ import annotations

import json
from pathlib import Path

from electra.config import Config, apply_overrides, preset_config
from electra.errors import UsageError
from electra.finetune import PRESET_LR, FinetuneConfig, finetune
from electra.flops import training_flops_per_token
from electra.inference import load_run
from electra.report import downstream_result, load_history, write_report
from electra.tasks import GLUE, load_task
from electra.tokenizer import load_tokenizer
from electra.train import pretrain, start_run


def compare(corpus, budget: str, task: str, task_dir, out_dir, seeds=(1, 2, 3), preset: str = "tiny",
            overrides: dict | None = None, epochs: int | None = None, show_progress: bool = True) -> dict:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{str(out)!r} already exists and is not empty; choose a new --out")
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

    ft_cfg = FinetuneConfig(lr=PRESET_LR.get(preset, 3e-4), epochs=epochs or spec.epochs)
    results = {}
    for name in ("electra", "mlm", "scratch"):
        if name in runs:
            loaded = load_run(runs[name])
            tokenizer, model_cfg, state = loaded.tokenizer, loaded.cfg.model, loaded.model.encoder.state_dict()
        else:  # the same encoder from random weights
            tokenizer, model_cfg, state = load_tokenizer(runs["electra"]), cfg.model, None
        report = finetune(spec, task_data, ft_cfg, model_cfg, tokenizer, state, out / "finetune" / name,
                          list(seeds), source=name, device=cfg.train.device,  # where pre-training ran
                          show_progress=show_progress)
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

"""`electra report`: a self-contained HTML page with PNG figures of one or more runs' training
curves (matplotlib), for reading a run or comparing objectives at equal compute.

Figures: losses (the discriminator's beside its label entropy), generator accuracy at [MASK],
discriminator accuracy, held-out discriminator AUC, learning rate and tokens/s against steps; with
several runs, the held-out curves against wall-clock time and against training FLOPs too. The
images are written beside the page and embedded in it (base64), so it opens with no network.
An optional table shows downstream results (median and spread over seeds).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from electra.config import Config
from electra.errors import UsageError
from electra.flops import training_flops_per_token
from electra.metrics_log import read_metrics
from electra.rundir import CONFIG_FILE, METRICS_FILE


def load_history(run) -> dict:
    """A run's config, its training-step records and its held-out evaluation records."""
    run = Path(run)
    if not (run / METRICS_FILE).is_file() or not (run / CONFIG_FILE).is_file():
        raise UsageError(f"{str(run)!r} is not a run with metrics (no {METRICS_FILE}); give the --out of "
                         "`electra pretrain`")
    cfg = Config.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    train, val = read_metrics(run / METRICS_FILE)
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    flops = training_flops_per_token(cfg) * tokens_per_step
    for r in train + val:
        r["flops"] = r["step"] * flops
    name = f"{run.name} ({cfg.objective.kind})"
    return {"name": name, "cfg": cfg, "train": train, "val": val, "flops_per_step": flops}


def downstream_result(report: dict) -> dict:
    """The results-table row of a fine-tuning report (`finetune`'s return, its metrics.json)."""
    metric = report["metric"]
    return {"metric": metric, "median": report["median"],
            "seeds": [100 * r[metric] for r in report["seeds"].values()]}


def read_finetuned(spec: str) -> tuple[str, dict]:
    """NAME=DIR, DIR the --out of `electra finetune` -> (NAME, its results-table row)."""
    name, sep, folder = spec.partition("=")
    path = Path(folder) / "metrics.json"
    if not sep or not name:
        raise UsageError(f"--finetuned takes NAME=DIR (e.g. electra=runs/sst2), got {spec!r}")
    if not path.is_file():
        raise UsageError(f"{str(path)!r} not found; give the --out of `electra finetune`")
    try:
        return name, downstream_result(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{str(path)!r} is not a fine-tuning metrics.json ({e})")


def _series(records, key):
    points = [(r["step"], r[key], r.get("elapsed"), r.get("flops")) for r in records
              if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return points


def _figure(path: Path, title: str, runs: list[dict], panels: list[tuple[str, str, str]], x: str = "step"):
    """One PNG: a panel per (split, key, label), a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    column = {"step": 0, "elapsed": 2, "flops": 3}[x]
    for ax, (split, key, label) in zip(axes[0], panels):
        for run in runs:
            pts = [p for p in _series(run[split], key) if p[column] is not None]
            if pts:
                xs = [p[column] / (60 if x == "elapsed" else 1) for p in pts]
                ax.plot(xs, [p[1] for p in pts], label=run["name"], marker="." if split == "val" else None)
            if key == "disc_loss":
                ent = [p for p in _series(run[split], "disc_label_entropy") if p[column] is not None]
                if ent:
                    ax.plot([p[column] / (60 if x == "elapsed" else 1) for p in ent], [p[1] for p in ent],
                            linestyle="--", color="gray", label=f"{run['name']}: label entropy")
        ax.set_title(label)
        ax.set_xlabel({"step": "step", "elapsed": "wall-clock minutes", "flops": "training FLOPs"}[x])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(runs, out_dir, results: dict | None = None, title: str = "ELECTRA pre-training") -> Path:
    """Render `out_dir/report.html` and its PNGs; `results`: {model: {"median", "seeds", "metric"}}."""
    histories = [load_history(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        _figure(out / "losses.png", "Losses (training)", histories,
                [("train", "gen_loss", "generator / MLM loss"), ("train", "disc_loss", "discriminator loss")]),
        _figure(out / "accuracy.png", "Accuracy (training)", histories,
                [("train", "gen_accuracy", "generator accuracy at [MASK]"),
                 ("train", "disc_accuracy", "discriminator accuracy")]),
        _figure(out / "heldout.png", "Held-out evaluation", histories,
                [("val", "gen_accuracy", "held-out accuracy at [MASK]"), ("val", "disc_auc", "held-out disc. ROC-AUC")]),
        _figure(out / "schedule.png", "Learning rate and throughput", histories,
                [("train", "lr", "learning rate"), ("train", "tokens_per_s", "tokens/s")]),
    ]
    if len(histories) > 1:
        for x in ("elapsed", "flops"):
            figures.append(_figure(out / f"heldout_vs_{x}.png", f"Held-out evaluation against {x}", histories,
                                   [("val", "gen_accuracy", "held-out accuracy at [MASK]"),
                                    ("train", "gen_loss", "generator / MLM loss")], x=x))
    rows = []
    for h in histories:
        last = h["train"][-1] if h["train"] else {}
        rows.append(f"<tr><td>{html.escape(h['name'])}</td><td>{last.get('step', 0):,}</td>"
                    f"<td>{last.get('elapsed', 0) / 60:.1f}</td><td>{last.get('step', 0) * h['flops_per_step']:.3g}</td>"
                    f"<td>{last.get('step', 0) * h['cfg'].train.batch_size * h['cfg'].data.seq_len:,}</td></tr>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
             "td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><h2>Runs</h2><table><tr><th>run</th><th>steps</th>"
             "<th>minutes</th><th>training FLOPs</th><th>tokens</th></tr>", *rows, "</table>"]
    if results:
        parts.append("<h2>Downstream results</h2><table id='results'><tr><th>model</th><th>metric</th>"
                     "<th>median</th><th>per seed</th></tr>")
        for model, r in results.items():
            seeds = ", ".join(f"{v:.2f}" for v in r["seeds"])
            parts.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(r['metric'])}</td>"
                         f"<td>{r['median']:.2f}</td><td>{seeds}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.read_bytes()).decode()
        parts.append(f"<p><img alt='{f.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    page = out / "report.html"
    page.write_text("\n".join(parts))
    return page

"""Where a long `electra compare` stands: per arm, each fine-tuning lr's median [min-max] over the
runs finished so far, and each pre-training run's last held-out metrics. Reads OUT only; for a
comparison still running or stopped part-way (the finished one writes OUT/results.json).

    python scripts/compare_progress.py runs/c10b
"""

import json
import statistics
import sys
from pathlib import Path

from electra.metrics_log import read_metrics
from electra.rundir import METRICS_FILE
from electra.report import downstream_result


def main(out: Path):
    arms = {}
    for report in sorted(out.glob("finetune/*/lr*/metrics.json")):
        arm, lr = report.parent.parent.name.rsplit("-s", 1)[0], report.parent.name[2:]
        scores = downstream_result(json.loads(report.read_text()))["seeds"]
        arms.setdefault(arm, {}).setdefault(lr, []).extend(scores)
    for arm, by_lr in arms.items():
        best_lr, best = max(by_lr.items(), key=lambda kv: statistics.median(kv[1]))
        cells = " | ".join(f"lr {lr}: {statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] n={len(v)}"
                           for lr, v in sorted(by_lr.items()))
        print(f"{arm:<12} best lr {best_lr}: {statistics.median(best):.1f} | {cells}")
    for run in sorted(out.glob("runs/*")):
        evals = read_metrics(run / METRICS_FILE)[1] if (run / METRICS_FILE).is_file() else []
        if evals:
            v = evals[-1]
            auc = f"AUC {v['disc_auc']:.3f} " if "disc_auc" in v else ""
            print(f"{run.name:<12} step {v['step']}: held-out {auc}acc@mask {v['gen_accuracy']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

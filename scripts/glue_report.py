"""Print a markdown table of fine-tuning results: `python scripts/glue_report.py OUT_ROOT...`, where
each OUT_ROOT holds one `electra finetune --out` folder per task (as scripts/glue.sh makes)."""

import json
import sys
from pathlib import Path

TASKS = ["sst2", "cola", "mrpc", "stsb", "rte"]


def main():
    print("| model | " + " | ".join(TASKS) + " |")
    print("|---|" + "---|" * len(TASKS))
    for root in sys.argv[1:]:
        cells, source = [], root
        for task in TASKS:
            path = Path(root) / task / "metrics.json"
            if not path.is_file():
                cells.append("-")
                continue
            r = json.loads(path.read_text())
            source = r["model"]
            seeds = ", ".join(f"{100 * s[r['metric']]:.1f}" for s in r["seeds"].values())
            cells.append(f"{r['median']:.1f} ({r['metric']}; {seeds})")
        print(f"| {source} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

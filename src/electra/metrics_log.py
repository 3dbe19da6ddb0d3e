"""What a training run reports: sums of step statistics between log lines (`Window`), the
`metrics.jsonl` file of one JSON record per log or evaluation step with its one-line console echo
(`MetricsLog`), and reading those records back (`read_metrics`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from electra.atomic import write_text_atomic
from electra.objective import summarize


class Window:
    """Sums of step statistics between log lines (tensors until flushed: one host sync per log).
    `reduce` sums them over ranks at a flush or a checkpoint (identity in a single process)."""

    # the same on every rank (the step's global gradient norm, whether it was skipped): summed
    # over ranks like the rest, then divided by their count
    REPLICATED = ("grad_norm", "skipped_steps")

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

    def _summed(self) -> dict[str, float]:
        """The sums over ranks, a replicated statistic counted once (every rank calls this)."""
        sums = self.reduce({**self.sums, "ranks": 1})
        ranks = sums.pop("ranks")
        return {k: v / ranks if k in self.REPLICATED else v for k, v in sums.items()}

    def flush(self, lr: float, elapsed: float) -> dict:
        sums = self._summed()
        seconds = max(time.monotonic() - self.start, 1e-9)
        steps = max(self.steps, 1)
        record = {"loss": sums["loss"] / steps, **summarize(sums), "lr": lr, "grad_norm": sums["grad_norm"] / steps,
                  "tokens_per_s": sums["num_tokens"] / seconds, "elapsed": elapsed,
                  "skipped_steps": int(sums.get("skipped_steps", 0))}
        self.__init__(self.reduce)
        return record

    def state(self) -> dict:
        """The window so far, for a checkpoint: a run resumed from it writes the records an
        uninterrupted run writes (timings aside). Every rank calls it (a collective)."""
        return {"steps": self.steps, "seconds": time.monotonic() - self.start, "sums": self._summed()}

    def restore(self, state: dict, holds_sums: bool = True):
        """Continue the window a checkpoint saved, as float32 like `add`'s sums, so the next record
        repeats the uninterrupted run's digits. Under DDP (on as many ranks as before or not) the
        sums over ranks go to rank 0 alone, the others taking zeros under the same keys (`reduce`
        needs them); a replicated statistic goes to every rank, as every rank adds it."""
        self.steps = int(state["steps"])
        self.start = time.monotonic() - float(state["seconds"])
        self.sums = {k: torch.tensor(v if holds_sums or k in self.REPLICATED else 0.0, dtype=torch.float32)
                     for k, v in state["sums"].items()}


class NullLog:
    """What ranks other than 0 log: nothing."""

    def write(self, *args, **kwargs):
        pass

    def echo(self, *args, **kwargs):
        pass


class MetricsLog:
    """`metrics.jsonl` (one JSON record per log or eval step) and the one-line console echo."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        if path.exists():  # drop records past the step training starts from (a resumed run's checkpoint)
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= start_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, step: int, record: dict, bar, prefix: str = "step"):
        record = {"step": step, **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.echo(format_record(record, prefix), bar)

    @staticmethod
    def echo(text: str, bar=None):
        (bar.write if bar is not None else tqdm.write)(text)


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(training-step records, held-out evaluation records) of a metrics.jsonl; a line cut short by
    a crash is skipped."""
    train, val = [], []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        (val if record.get("split") == "val" else train).append(record)
    return train, val


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

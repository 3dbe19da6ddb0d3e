"""Linear probes of frozen encoders on a GLUE single-sentence task (diagnostic for issue 5).

For each encoder: the [CLS] vector and the mean over tokens of every layer's output (the
embeddings' projection is layer 0), then a logistic regression per feature set, trained on the
train split and scored on dev. It asks whether pre-training left task-relevant information in the
representations, separately from how well fine-tuning finds it.

    python scripts/probe.py --data ../shared/data/glue --tokenizer RUN  RUN_A RUN_B none
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from electra.config import preset_config
from electra.finetune import encode, padded_batch
from electra.rundir import load_run
from electra.model import Encoder, init_weights
from electra.tasks import GLUE, load_task
from electra.tokenizer import load_tokenizer


@torch.no_grad()
def features(encoder: Encoder, data, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{"cls": (n, D) last layer at [CLS], "mean L": (n, D) token mean after layer L}. The encoder
    runs its own forward; hooks catch the input of the first layer and each layer's output."""
    encoder.eval()
    states: list[torch.Tensor] = []
    hooks = [encoder.layers[0].register_forward_pre_hook(lambda module, args: states.append(args[0]))]
    hooks += [layer.register_forward_hook(lambda module, args, out: states.append(out)) for layer in encoder.layers]
    out: dict[str, list] = {}
    try:
        for k in range(0, len(data.ids), batch_size):
            ids, types, mask = padded_batch(data, range(k, min(k + batch_size, len(data.ids))), "cpu")
            states.clear()
            last = encoder(ids, types, mask)
            states[-1] = last  # the last layer's output after any final norm
            weights = (mask / mask.sum(1, keepdim=True))[..., None]
            for i, h in enumerate(states):
                out.setdefault(f"mean {i}", []).append((h * weights).sum(1))
            out.setdefault("cls", []).append(states[-1][:, 0])
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in out.items()}


def probe(train_x, train_y, dev_x, dev_y, l2: float = 1e-4) -> float:
    """Dev accuracy of an L2-regularised logistic regression on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, dev_x = (train_x - mean) / std, (dev_x - mean) / std
    classes = int(train_y.max()) + 1
    w = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ w + b, train_y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((dev_x @ w + b).argmax(-1) == dev_y).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="run directories, or `none` for a random encoder")
    ap.add_argument("--task", default="sst2", choices=("sst2", "cola"))
    ap.add_argument("--data", required=True, help="the GLUE folder")
    ap.add_argument("--tokenizer", help="run whose tokenizer a `none` encoder uses")
    ap.add_argument("--preset", default="tiny", help="the random encoder's size")
    ap.add_argument("--seed", type=int, default=0, help="the random encoder's initialisation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-size", type=int, help="probe on a seeded subset of this many training examples")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = GLUE[args.task]
    task = load_task(spec, args.data, args.train_size)
    for name in args.models:
        if name == "none":
            tokenizer = load_tokenizer(args.tokenizer)
            torch.manual_seed(args.seed)
            cfg = replace(preset_config(args.preset).model, vocab_size=tokenizer.get_vocab_size())
            encoder = Encoder(cfg)
            init_weights(encoder)
        else:
            loaded = load_run(name)
            tokenizer, encoder = loaded.tokenizer, loaded.model.encoder
            name = f"{name} step {loaded.step}"
        train, dev = (encode(tokenizer, split, spec, 128) for split in (task.train, task.dev))
        f_train, f_dev = features(encoder, train), features(encoder, dev)
        scores = {key: probe(f_train[key], train.labels, f_dev[key], dev.labels) for key in f_train}
        print(f"{name}: " + ", ".join(f"{key} {100 * acc:.1f}" for key, acc in scores.items()), flush=True)


if __name__ == "__main__":
    main()

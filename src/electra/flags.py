"""The `electra` command's flags: one argparse parser per subcommand, declared in one place.

Defaults are None (the library's configs hold them; help texts name them), and a usage error is
one line pointing at `--help` (`_Parser`). `tests/cli_help.txt` freezes every `--help` page.
"""

from __future__ import annotations

import argparse


def _add_corpus_args(p, required=True):
    p.add_argument("--corpus", nargs="+", required=required, metavar="FILE",
                   help="text files, folders of them or glob patterns (.gz decompressed); builtin (the "
                        "public-domain books that ship with electra); hf:NAME[:CONFIG[:SPLIT]] (Hugging Face "
                        "datasets: a hub name, a local parquet/json/arrow file or a save_to_disk folder)")
    p.add_argument("--text-field", help="hf: corpora: the column holding the text (default text)")
    p.add_argument("--doc-sep", choices=("line", "blank"),
                   help="one document per line (default) or blank-line separated (WikiText)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and where the flags are listed
    (not the whole usage text), exit code 2. Subcommand parsers are of this class too."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="electra", description="ELECTRA pre-training from scratch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tokenizer", help="train a BPE tokenizer on text files")
    _add_corpus_args(p)
    p.add_argument("--vocab-size", type=int, help="default 30,522 (BERT's); 0: by the corpus's size (8,192, "
                   "16,384 from 4 M words)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-lowercase", action="store_const", const=False, dest="lowercase", help="keep case")
    p.add_argument("--normalization", choices=("nfkc", "nfc", "nfd", "nfkd", "none"), help="default nfkc")
    p.add_argument("--workers", type=int, help="processes counting words (default 2; the file is the same for any)")

    p = sub.add_parser("prepare", help="tokenize text into token shards for pre-training")
    _add_corpus_args(p)
    p.add_argument("--tokenizer", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--val-fraction", type=float,
                   help="share of documents held out for validation (every k-th document; default 0.005)")
    p.add_argument("--workers", type=int,
                   help="tokenizer processes (default 1: one process, the tokenizer's own threads)")

    p = sub.add_parser("pretrain", help="pre-train ELECTRA (tokenizer + prepare + training in one go)")
    _add_corpus_args(p, required=False)
    p.add_argument("--data", metavar="DIR", help="prepared data (instead of --corpus; with neither, the built-in "
                                                 "corpus)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--preset", help="tiny (default), small, base or large")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with model/objective/data/train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN from its latest checkpoint; safe to pass always: starts RUN if it has "
                        "nothing to resume yet, and checks --corpus/--data against what RUN was started with")
    for flag, key, typ in (("--batch-size", "train.batch_size", int), ("--lr", "train.lr", float),
                           ("--seq-len", "data.seq_len", int), ("--max-steps", "train.max_steps", int),
                           ("--time-budget", "train.time_budget", str), ("--seed", "train.seed", int),
                           ("--checkpoint-every", "train.checkpoint_every", int),
                           ("--eval-every", "train.eval_every", int), ("--device", "train.device", str),
                           ("--vocab-size", "data.vocab_size", int)):
        p.add_argument(flag, type=typ, dest=key, help=f"sets {key}")
    p.add_argument("--objective", choices=("electra", "mlm"), dest="objective.kind",
                   help="electra (default) or mlm: BERT's masked LM at the same size, the baseline")
    p.add_argument("--compile", action="store_const", const=True, dest="train.compile",
                   help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")

    p = sub.add_parser("evaluate", help="replaced-token detection metrics of a run on a text file")
    p.add_argument("--model", required=True, metavar="RUN")
    _add_corpus_args(p)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--max-examples", type=int, help="evaluate at most this many examples")
    p.add_argument("--batch-size", type=int, help="default 64")
    p.add_argument("--device", help="default cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("detect", help="per-word probability that a word was replaced")
    p.add_argument("--model", required=True, metavar="RUN")
    p.add_argument("text", nargs="*", help="texts to score (each argument separately); "
                   "without texts or --file, one text per line from standard input")
    p.add_argument("--file", metavar="FILE", help="score each line of FILE (batched)")
    p.add_argument("--json", action="store_true", help="one JSON object per text (JSON Lines)")
    p.add_argument("--threshold", type=float, help="flag words at or above this probability (default 0.5)")
    p.add_argument("--top-k", type=int, help="generator suggestions per flagged word (default 3; 0: none)")
    p.add_argument("--word-score", choices=("max", "mean"),
                   help="a word's probability from its pieces': max (default), or the mean of their logits")
    p.add_argument("--batch-size", type=int, default=32, help="texts scored at once (default 32)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--device", help="default cpu")

    p = sub.add_parser("finetune", help="fine-tune the discriminator on a GLUE task or your own data")
    p.add_argument("--model", required=True, metavar="RUN", help="a pre-trained run, or none (random init)")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte", "custom"))
    p.add_argument("--data", metavar="DIR",
                   help="the task's folder (train/dev[/test] files), e.g. ../shared/data/glue/SST-2, or hf:PATH "
                        "of a save_to_disk copy; without it, a GLUE task comes from the hub (nyu-mll/glue)")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--seeds", type=_seed_list, help="comma-separated seeds, e.g. 1,2,3 (default 1)")
    p.add_argument("--epochs", type=int, help="default: the task's (3; 10 for RTE and STS-B), more on a small "
                                              "training set, up to 300 optimizer steps")
    p.add_argument("--lr", type=float, help="default: by model size (1e-3 tiny, 3e-4 small, 1e-4 base, 5e-5 large)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--max-length", type=int, help="default 128 (or the model's positions, if fewer)")
    p.add_argument("--layer-decay", type=float, help="default: by model size (1.0 tiny, else 0.8)")
    p.add_argument("--batching", choices=("random", "length"),
                   help="length (default): batches of near-equal lengths, in random order (less padding: "
                        "SST-2 1.8x faster); random: the official recipe's")
    p.add_argument("--pooling", choices=("cls", "mean"),
                   help="what the classifier reads: cls (the official recipe's [CLS] vector) or mean (the mean "
                        "over the real tokens). Default: mean for a tiny-sized model on up to 20,000 training "
                        "examples (SST-2 with 1,000: +5.5 points, docs/LOG.md), else cls")
    p.add_argument("--train-size", type=int, help="fine-tune on a seeded random subset of this many training examples")
    p.add_argument("--step", type=int, help="checkpoint step of RUN (default: the latest)")
    p.add_argument("--tokenizer", metavar="DIR", help="with --model none: the tokenizer (a run or its folder)")
    p.add_argument("--preset", help="with --model none: the architecture (default tiny)")
    p.add_argument("--text-column", help="custom task: the text column")
    p.add_argument("--text-pair-column", help="custom task: the second text column, if any")
    p.add_argument("--label-column", help="custom task: the label column")
    p.add_argument("--regression", action="store_true", help="custom task: numeric labels")
    p.add_argument("--device", help="default cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("compare", help="pre-training objectives and settings side by side, fine-tuned on a task")
    _add_corpus_args(p, required=False)
    p.add_argument("--pretrain-data", metavar="DIR", help="prepared data (instead of --corpus)")
    p.add_argument("--budget", required=True, help="per pre-training run: wall-clock (15m) or FLOPs (6.6e13)")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte"))
    p.add_argument("--data", metavar="DIR", help="the task's folder, or the GLUE root (default: from the hub)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="results; the same command again continues it, with more --pretrain-seeds, --lrs or "
                        "(appended) --arm extends it")
    p.add_argument("--arm", action="append", metavar="NAME[:KEY=VALUE,...]",
                   help="an arm: electra, mlm, scratch (random init) or NAME:overrides (repeatable; "
                        "default electra, mlm, scratch)")
    p.add_argument("--pretrain-seeds", type=_seed_list, help="pre-training seeds per arm (default 0)")
    p.add_argument("--seeds", type=_seed_list, help="fine-tuning seeds per run (default 1,2,3)")
    p.add_argument("--lrs", type=_float_list, help="fine-tuning lr grid, e.g. 3e-4,1e-3,3e-3: each arm's best on dev")
    p.add_argument("--train-size", type=int, help="fine-tune on a seeded subset of this many training examples")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: finetune's)")
    p.add_argument("--layer-decay", type=float, help="fine-tuning layer-wise lr decay (default: finetune's)")
    p.add_argument("--preset", help="default tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pre-training overrides, every arm")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, the CPU threads shared among them (default 1)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("bench", help="time pre-training steps: tokens/s, FLOPs, MFU (and the HF reference)")
    p.add_argument("--preset", help="default small")
    p.add_argument("--device", help="default auto")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default fp32")
    p.add_argument("--compile", nargs="?", const="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile the model, optionally with a mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--batch", type=int, help="default 16")
    p.add_argument("--seq-len", type=int, help="default 128")
    p.add_argument("--vocab-size", type=int, help="default: the official 30,522")
    p.add_argument("--steps", type=int, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--objective", choices=("electra", "mlm"), help="default electra")
    p.add_argument("--reference", choices=("hf",), help="also time the transformers ELECTRA pair")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="an HTML page with figures of runs' training curves")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", metavar="DIR", help="default: RUN/report (the first RUN)")
    p.add_argument("--finetuned", action="append", default=[], metavar="NAME=DIR",
                   help="a row of the downstream table from `electra finetune --out DIR` (repeatable)")
    p.add_argument("--title", help="default: ELECTRA pre-training")

    p = sub.add_parser("export", help="write a run as Hugging Face ELECTRA directories")
    p.add_argument("--model", required=True, metavar="RUN")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")

    p = sub.add_parser("import", help="make a run from Hugging Face ELECTRA weights")
    p.add_argument("--hf", required=True, metavar="DIR",
                   help="a discriminator directory, or an export with discriminator/ and generator/")
    p.add_argument("--generator", metavar="DIR", help="the generator directory, if elsewhere")
    p.add_argument("--out", required=True, metavar="RUN")
    p.add_argument("--preset", help="training settings to start from (default small)")
    parser.commands = sub.choices  # name -> its parser
    return parser


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("names no seed")
    return seeds


def _float_list(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("needs positive numbers")
    return values

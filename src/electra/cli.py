"""`electra` command line: subcommands map to library calls, nothing else.

Flags default to None and only the ones given are passed on, so the library's configs and
functions hold the only defaults. Bad input raises `UsageError`; `main` prints it on one line
(`electra: error: ...`) and exits 2. `--debug` shows the traceback instead. Heavy imports happen
inside each subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from electra.errors import UsageError


def _add_corpus_args(p, required=True):
    p.add_argument("--corpus", nargs="+", required=required, metavar="FILE",
                   help="text files, folders of them or glob patterns; .gz files are decompressed")
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
    p.add_argument("--vocab-size", type=int, help="default 30,522 (BERT's)")
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
    p.add_argument("--data", metavar="DIR", help="prepared data (instead of --corpus)")
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
    p.add_argument("--batch-size", type=int, default=32, help="texts scored at once (default 32)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--device", help="default cpu")

    p = sub.add_parser("finetune", help="fine-tune the discriminator on a GLUE task or your own data")
    p.add_argument("--model", required=True, metavar="RUN", help="a pre-trained run, or none (random init)")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte", "custom"))
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the task's folder (train/dev[/test] files), e.g. ../shared/data/glue/SST-2")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--seeds", type=_seed_list, help="comma-separated seeds, e.g. 1,2,3 (default 1)")
    p.add_argument("--epochs", type=int, help="default: the task's (3; 10 for RTE and STS-B)")
    p.add_argument("--lr", type=float, help="default: by model size (1e-3 tiny, 3e-4 small, 1e-4 base, 5e-5 large)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--max-length", type=int, help="default 128 (or the model's positions, if fewer)")
    p.add_argument("--layer-decay", type=float, help="default 0.8")
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

    p = sub.add_parser("compare", help="ELECTRA vs masked LM at the same budget, fine-tuned on a task")
    _add_corpus_args(p)
    p.add_argument("--budget", required=True, help="pre-training wall-clock budget of each, e.g. 15m")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte"))
    p.add_argument("--data", required=True, metavar="DIR", help="the task's folder, or the GLUE root")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--seeds", type=_seed_list, help="fine-tuning seeds (default 1,2,3)")
    p.add_argument("--preset", help="default tiny")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the task's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pre-training overrides")
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


def _given(args, **names) -> dict:
    """{parameter: args.flag} for the flags given (not None); `names` maps parameter -> flag."""
    return {param: getattr(args, flag) for param, flag in names.items() if getattr(args, flag) is not None}


def cmd_tokenizer(args):
    from electra.tokenizer import train_tokenizer

    stats = train_tokenizer(args.corpus, args.out, **_given(args, vocab_size="vocab_size", lowercase="lowercase",
                                                            normalization="normalization", doc_sep="doc_sep",
                                                            workers="workers"))
    print(f"tokenizer: {stats.documents:,} documents, {stats.bytes:,} bytes, "
          f"{stats.replaced} undecodable byte sequences replaced -> {Path(args.out) / 'tokenizer.json'}")


def cmd_prepare(args):
    from electra.data import prepare_corpus

    index = prepare_corpus(args.corpus, args.tokenizer, args.out,
                           **_given(args, doc_sep="doc_sep", val_fraction="val_fraction", workers="workers"))
    s = index["splits"]
    print(f"prepared {s['train']['tokens']:,} training and {s['val']['tokens']:,} validation tokens "
          f"({index['read']['documents']:,} documents, {index['read']['replaced']} undecodable byte "
          f"sequences replaced) -> {args.out}")


def _overrides(args) -> dict:
    from electra.config import load_config_file, parse_set_args

    out = load_config_file(Path(args.config)) if args.config else {}
    out.update(parse_set_args(args.set))
    out.update({k: v for k, v in vars(args).items() if "." in k and v is not None})
    if args.doc_sep:
        out["data.doc_sep"] = args.doc_sep
    return out


def cmd_pretrain(args):
    from electra.distributed import init_from_env, run_on_main, shutdown
    from electra.rundir import open_run

    ranks = init_from_env(getattr(args, "train.device") or "auto")  # world size 1 unless under torchrun
    try:
        # Rank 0 makes (or extends) the run directory; the others wait and get its config.
        cfg, data = run_on_main(ranks, lambda: open_run(
            args.out, overrides=_overrides(args), corpus=args.corpus, data_dir=args.data, resume=args.resume,
            show_progress=not args.no_progress, preset=args.preset))
        from electra.runtime import keep_freed_memory_on_cpu
        from electra.train import pretrain

        keep_freed_memory_on_cpu(cfg.train.device)  # process-wide: here, at the entry point

        pretrain(cfg, args.out, data, resume=args.resume, show_progress=not args.no_progress, ranks=ranks)
    finally:
        shutdown(ranks)


def cmd_evaluate(args):
    from electra.evaluate import evaluate_corpus
    from electra.rundir import load_run

    loaded = load_run(args.model, args.step, **_given(args, device="device"))
    metrics = evaluate_corpus(loaded, args.corpus, **_given(args, doc_sep="doc_sep", batch_size="batch_size",
                                                            max_examples="max_examples", device="device"))
    if args.json:
        print(json.dumps(metrics))
        return
    width = max(map(len, metrics))
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def cmd_detect(args):
    from electra.inference import detect, format_detection, texts_to_score
    from electra.rundir import load_run

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    texts = texts_to_score(args.text, args.file)
    loaded = load_run(args.model, args.step, **_given(args, device="device"))
    options = _given(args, threshold="threshold", top_k="top_k", device="device")
    for start in range(0, len(texts), args.batch_size):
        for i, result in enumerate(detect(loaded, texts[start:start + args.batch_size], **options)):
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            print(("\n" if start + i else "") + format_detection(result))


def cmd_finetune(args):
    from electra.finetune import FinetuneConfig, finetune, starting_point, summary_line
    from electra.runtime import set_cpu_threads
    from electra.tasks import load_task, task_spec

    spec = task_spec(args.task, args.data, args.text_column, args.text_pair_column, args.label_column,
                     args.regression)
    task = load_task(spec, args.data)
    set_cpu_threads(args.threads)  # before loading a model: its copies may start the worker threads
    start = starting_point(args.model, args.step, args.tokenizer, **_given(args, preset="preset"))
    cfg = FinetuneConfig(**_given(args, lr="lr", batch_size="batch_size", epochs="epochs", max_length="max_length",
                                  layer_decay="layer_decay"))
    report = finetune(spec, task, cfg, start, args.out, show_progress=not args.no_progress,
                      **_given(args, seeds="seeds", device="device"))
    print(summary_line(report))
    print(f"best seed {report['best_seed']}: model, metrics.json and predictions/ in {args.out}")


def cmd_compare(args):
    from electra.compare import compare
    from electra.config import parse_set_args
    from electra.runtime import keep_freed_memory_on_cpu

    overrides = parse_set_args(args.set)
    if args.doc_sep:
        overrides["data.doc_sep"] = args.doc_sep
    keep_freed_memory_on_cpu(overrides.get("train.device", "auto"))
    results = compare(args.corpus, args.budget, args.task, args.data, args.out, overrides=overrides,
                      show_progress=not args.no_progress, **_given(args, seeds="seeds", preset="preset",
                                                                   epochs="epochs"))
    for name, r in results.items():
        print(f"{name:<8} {args.task} dev {r['metric']} median {r['median']:.2f} (seeds "
              f"{', '.join(f'{v:.2f}' for v in r['seeds'])}); pre-training {r['pretrain_flops']:.3g} FLOPs")
    print(f"report: {Path(args.out) / 'report.html'}")


def cmd_bench(args):
    from electra.bench import BenchConfig, format_result, run_bench
    from electra.config import parse_set_args
    from electra.runtime import keep_freed_memory_on_cpu, set_cpu_threads

    set_cpu_threads(args.threads)
    bench = BenchConfig(**_given(args, preset="preset", device="device", dtype="dtype", compile="compile",
                                 batch="batch", seq_len="seq_len", vocab_size="vocab_size", steps="steps",
                                 warmup="warmup", objective="objective", reference="reference"))
    keep_freed_memory_on_cpu(bench.device)  # as the training loop
    result = run_bench(bench, parse_set_args(args.set))
    print(json.dumps(result) if args.json else format_result(result, bench))


def cmd_report(args):
    from electra.report import read_finetuned, write_report

    results = dict(read_finetuned(spec) for spec in args.finetuned)
    page = write_report(args.runs, args.out or Path(args.runs[0]) / "report", results, **_given(args, title="title"))
    print(f"report: {page} (figures beside it)")


def cmd_export(args):
    from electra.export import export_run

    out = export_run(args.model, args.out, args.step, args.force)
    print(f"exported -> {out}/discriminator (ElectraForPreTraining) and {out}/generator (ElectraForMaskedLM)")


def cmd_import(args):
    from electra.export import import_hf

    cfg, notes = import_hf(args.hf, args.out, args.generator, **_given(args, preset="preset"))
    for note in notes:
        print(f"note: {note}")
    m = cfg.model
    print(f"imported an ELECTRA of {m.num_layers} layers, hidden {m.hidden_size} -> {args.out}; continue "
          f"pre-training with `electra pretrain --out {args.out} --resume --corpus FILE...`")


COMMANDS = {"tokenizer": cmd_tokenizer, "prepare": cmd_prepare, "pretrain": cmd_pretrain,
            "evaluate": cmd_evaluate, "detect": cmd_detect, "finetune": cmd_finetune, "compare": cmd_compare,
            "bench": cmd_bench, "report": cmd_report, "export": cmd_export, "import": cmd_import}


def main(argv=None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand whose flags were meant
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        COMMANDS[args.command](args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"electra: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("electra: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

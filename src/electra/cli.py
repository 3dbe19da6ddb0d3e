"""`electra` command line: subcommands map to library calls, nothing else (the flags: flags.py).

Flags default to None and only the ones given are passed on, so the library's configs and
functions hold the only defaults. Bad input raises `UsageError`; `main` prints it on one line
(`electra: error: ...`) and exits 2. `--debug` shows the traceback instead. Heavy imports happen
inside each subcommand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from electra.errors import UsageError
from electra.flags import build_parser


def _given(args, **names) -> dict:
    """{parameter: args.flag} for the flags given (not None); `names` maps parameter -> flag."""
    return {param: getattr(args, flag) for param, flag in names.items() if getattr(args, flag) is not None}


def cmd_tokenizer(args):
    from electra.tokenizer import train_tokenizer

    stats = train_tokenizer(args.corpus, args.out, **_given(args, vocab_size="vocab_size", lowercase="lowercase",
                                                            normalization="normalization", doc_sep="doc_sep",
                                                            workers="workers"))
    print(f"tokenizer: {stats.documents:,} documents, {stats.words:,} words, {stats.bytes:,} bytes, "
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
    options = _given(args, threshold="threshold", top_k="top_k", word_score="word_score", device="device")
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
    task = load_task(spec, args.data, args.train_size)
    set_cpu_threads(args.threads)  # before loading a model: its copies may start the worker threads
    start = starting_point(args.model, args.step, args.tokenizer, **_given(args, preset="preset"))
    cfg = FinetuneConfig(**_given(args, lr="lr", batch_size="batch_size", epochs="epochs", max_length="max_length",
                                  layer_decay="layer_decay", batching="batching", pooling="pooling"))
    report = finetune(spec, task, cfg, start, args.out, show_progress=not args.no_progress,
                      **_given(args, seeds="seeds", device="device"))
    print(summary_line(report))
    print(f"best seed {report['best_seed']}: model, metrics.json and predictions/ in {args.out}")


def cmd_compare(args):
    from electra.compare import CompareConfig, compare
    from electra.config import parse_set_args
    from electra.runtime import keep_freed_memory_on_cpu

    overrides = parse_set_args(args.set)
    if args.doc_sep:
        overrides["data.doc_sep"] = args.doc_sep
    keep_freed_memory_on_cpu(overrides.get("train.device", "auto"))
    given = _given(args, arms="arm", pretrain_seeds="pretrain_seeds", seeds="seeds", lrs="lrs", train_size="train_size",
                   epochs="epochs", layer_decay="layer_decay", preset="preset")
    cc = CompareConfig(args.task, args.budget, overrides=overrides,
                       **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    results = compare(cc, args.data, args.out, args.corpus, args.pretrain_data, args.jobs,
                      show_progress=not args.no_progress)
    for name, r in results.items():
        heldout = ", ".join(f"AUC {h['disc_auc']:.3f} acc@mask {h['gen_accuracy']:.3f}" for h in r["heldout"])
        print(f"{name:<10} {args.task} dev {r['metric']} median {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}, "
              f"{len(r['seeds'])} runs) at lr {r['lr']:g}; pre-training {r['pretrain_flops']:.3g} FLOPs"
              + (f"; held-out {heldout}" if heldout else ""))
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
    if getattr(args, "text_field", None) and args.corpus:
        from electra.hf_datasets import PREFIX, HFDataset

        args.corpus = [HFDataset(c, args.text_field) if c.startswith(PREFIX) else c for c in args.corpus]
    try:
        COMMANDS[args.command](args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"electra: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("electra: interrupted" + (f": {e}" if e.args else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

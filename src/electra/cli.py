"""`electra` command line: subcommands map to library calls, nothing else.

Bad input raises `UsageError`; `main` prints it on one line (`electra: error: ...`) and exits 2.
`--debug` shows the traceback instead. Heavy imports happen inside each subcommand.
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
    p.add_argument("--doc-sep", choices=("line", "blank"), default=None,
                   help="one document per line (default) or blank-line separated (WikiText)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electra", description="ELECTRA pre-training from scratch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tokenizer", help="train a BPE tokenizer on text files")
    _add_corpus_args(p)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-lowercase", action="store_true", help="keep case")
    p.add_argument("--normalization", choices=("nfkc", "nfc", "nfd", "nfkd", "none"), default="nfkc")

    p = sub.add_parser("prepare", help="tokenize text into token shards for pre-training")
    _add_corpus_args(p)
    p.add_argument("--tokenizer", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--val-fraction", type=float, default=0.005,
                   help="share of documents held out for validation (every k-th document)")
    p.add_argument("--workers", type=int, default=1,
                   help="tokenizer processes (default 1: one process, the tokenizer's own threads)")

    p = sub.add_parser("pretrain", help="pre-train ELECTRA (tokenizer + prepare + training in one go)")
    _add_corpus_args(p, required=False)
    p.add_argument("--data", metavar="DIR", help="prepared data (instead of --corpus)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--preset", default="tiny", help="tiny (default), small, base or large")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with model/objective/data/train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    for flag, key, typ in (("--batch-size", "train.batch_size", int), ("--lr", "train.lr", float),
                           ("--seq-len", "data.seq_len", int), ("--max-steps", "train.max_steps", int),
                           ("--time-budget", "train.time_budget", str), ("--seed", "train.seed", int),
                           ("--checkpoint-every", "train.checkpoint_every", int),
                           ("--eval-every", "train.eval_every", int), ("--device", "train.device", str),
                           ("--vocab-size", "data.vocab_size", int)):
        p.add_argument(flag, type=typ, default=None, dest=key, help=f"sets {key}")
    p.add_argument("--objective", choices=("electra", "mlm"), default=None, dest="objective.kind",
                   help="electra (default) or mlm: BERT's masked LM at the same size, the baseline")
    p.add_argument("--compile", action="store_const", const=True, default=None, dest="train.compile",
                   help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")

    p = sub.add_parser("evaluate", help="replaced-token detection metrics of a run on a text file")
    p.add_argument("--model", required=True, metavar="RUN")
    _add_corpus_args(p)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--max-examples", type=int, help="evaluate at most this many examples")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("detect", help="per-word probability that a word was replaced")
    p.add_argument("--model", required=True, metavar="RUN")
    p.add_argument("text", nargs="*", help="texts to score (each argument separately); "
                   "without texts or --file, one text per line from standard input")
    p.add_argument("--file", metavar="FILE", help="score each line of FILE (batched)")
    p.add_argument("--json", action="store_true", help="one JSON object per text (JSON Lines)")
    p.add_argument("--threshold", type=float, default=0.5, help="flag words at or above this probability")
    p.add_argument("--top-k", type=int, default=3, help="generator suggestions per flagged word (0: none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("finetune", help="fine-tune the discriminator on a GLUE task or your own data")
    p.add_argument("--model", required=True, metavar="RUN", help="a pre-trained run, or none (random init)")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte", "custom"))
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the task's folder (train/dev[/test] files), e.g. ../shared/data/glue/SST-2")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--seeds", default="1", help="comma-separated seeds, e.g. 1,2,3 (default 1)")
    p.add_argument("--epochs", type=int, help="default: the task's (3; 10 for RTE and STS-B)")
    p.add_argument("--lr", type=float, help="default: by model size (1e-3 tiny, 3e-4 small, 1e-4 base, 5e-5 large)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--layer-decay", type=float, default=0.8)
    p.add_argument("--step", type=int, help="checkpoint step of RUN (default: the latest)")
    p.add_argument("--tokenizer", metavar="DIR", help="with --model none: the tokenizer (a run or its folder)")
    p.add_argument("--preset", default="tiny", help="with --model none: the architecture (default tiny)")
    p.add_argument("--text-column", help="custom task: the text column")
    p.add_argument("--text-pair-column", help="custom task: the second text column, if any")
    p.add_argument("--label-column", help="custom task: the label column")
    p.add_argument("--regression", action="store_true", help="custom task: numeric labels")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("compare", help="ELECTRA vs masked LM at the same budget, fine-tuned on a task")
    _add_corpus_args(p)
    p.add_argument("--budget", required=True, help="pre-training wall-clock budget of each, e.g. 15m")
    p.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "stsb", "rte"))
    p.add_argument("--data", required=True, metavar="DIR", help="the task's folder, or the GLUE root")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--seeds", default="1,2,3", help="fine-tuning seeds (default 1,2,3)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the task's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pre-training overrides")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("bench", help="time pre-training steps: tokens/s, FLOPs, MFU (and the HF reference)")
    p.add_argument("--preset", default="small")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--compile", nargs="?", const="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile the model, optionally with a mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522, help="default: the official 30,522")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--objective", choices=("electra", "mlm"), default="electra")
    p.add_argument("--reference", choices=("hf",), help="also time the transformers ELECTRA pair")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="an HTML page with figures of runs' training curves")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", metavar="DIR", help="default: RUN/report (the first RUN)")
    p.add_argument("--finetuned", action="append", default=[], metavar="NAME=DIR",
                   help="a row of the downstream table from `electra finetune --out DIR` (repeatable)")
    p.add_argument("--title", default="ELECTRA pre-training")

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
    p.add_argument("--preset", default="small", help="training settings to start from (default small)")
    return parser


def cmd_tokenizer(args):
    from electra.tokenizer import train_tokenizer

    stats = train_tokenizer(args.corpus, args.out, args.vocab_size, not args.no_lowercase,
                            args.normalization, args.doc_sep or "line")
    print(f"tokenizer: {stats.documents:,} documents, {stats.bytes:,} bytes, "
          f"{stats.replaced} undecodable byte sequences replaced -> {Path(args.out) / 'tokenizer.json'}")


def cmd_prepare(args):
    from electra.data import prepare_corpus

    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    index = prepare_corpus(args.corpus, args.tokenizer, args.out, args.doc_sep or "line",
                           args.val_fraction, workers=args.workers)
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

    ranks = init_from_env(getattr(args, "train.device") or "auto")  # world size 1 unless under torchrun
    try:
        # Rank 0 makes (or extends) the run directory; the others wait and get its config.
        cfg, data = run_on_main(ranks, lambda: _prepare_run(args))
        from electra.train import pretrain

        pretrain(cfg, args.out, data, resume=args.resume, show_progress=not args.no_progress, ranks=ranks)
    finally:
        shutdown(ranks)


def _prepare_run(args):
    """The run's config and data directory: a new run (tokenizer + data), a resumed one, or an
    imported one that gets its data now."""
    from electra.checkpoint import CONFIG_FILE
    from electra.config import Config, apply_overrides, preset_config
    from electra.train import attach_data, run_data_dir, start_run

    overrides = _overrides(args)
    config_path = Path(args.out) / CONFIG_FILE
    if args.resume:
        if not config_path.is_file():
            raise UsageError(f"nothing to resume in {args.out!r} (no {CONFIG_FILE}); start without --resume")
        cfg = apply_overrides(Config.from_dict(json.loads(config_path.read_text())), overrides)
        data = run_data_dir(args.out)
        if data is not None and (args.corpus or args.data):
            raise UsageError("--resume continues RUN on its own data; drop --corpus/--data")
        if data is None:  # an imported run: it trains on the corpus given now
            if bool(args.corpus) == bool(args.data):
                raise UsageError(f"{args.out!r} has no data yet (an imported model); give --corpus FILE... "
                                 "or --data DIR with --resume")
            data = attach_data(cfg, args.out, args.corpus, args.data, show_progress=not args.no_progress)
        return cfg, data
    if bool(args.corpus) == bool(args.data):
        raise UsageError("give either --corpus FILE... (raw text) or --data DIR (prepared shards)")
    cfg = apply_overrides(preset_config(args.preset), overrides)
    return start_run(cfg, args.out, args.corpus, args.data, show_progress=not args.no_progress)


def cmd_evaluate(args):
    from electra.evaluate import evaluate_corpus
    from electra.inference import load_run

    loaded = load_run(args.model, args.step, args.device)
    metrics = evaluate_corpus(loaded, args.corpus, args.doc_sep or "line", args.batch_size,
                              args.max_examples, args.device)
    if args.json:
        print(json.dumps(metrics))
        return
    width = max(map(len, metrics))
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def cmd_detect(args):
    from electra.inference import detect, load_run

    if not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.batch_size < 1 or args.top_k < 0:
        raise UsageError("--batch-size must be >= 1 and --top-k >= 0")
    texts = _detect_inputs(args)
    loaded = load_run(args.model, args.step, args.device)
    for start in range(0, len(texts), args.batch_size):
        for i, result in enumerate(detect(loaded, texts[start:start + args.batch_size], args.device,
                                          args.threshold, args.top_k)):
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            if start + i:
                print()
            print(f"{'Token':<15} Is_Replaced_Prob")
            for word, p, flagged, options in zip(result["words"], result["word_probs"], result["flagged"],
                                                 result["suggestions"]):
                mark = f"  *  was it: {', '.join(options)}?" if flagged and options else "  *" if flagged else ""
                print(f"{word:<15} {p:.4f}{mark}")


def _detect_inputs(args) -> list[str]:
    if args.text and args.file:
        raise UsageError("give texts as arguments or --file FILE, not both")
    if args.file:
        try:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                texts = [line.rstrip("\r\n") for line in f]
        except OSError as e:
            raise UsageError(f"cannot read --file {args.file!r} ({e.strerror})")
    elif args.text:
        texts = args.text
    elif sys.stdin.isatty():
        raise UsageError("nothing to score: give texts as arguments, --file FILE, or pipe lines on stdin")
    else:
        texts = [line.rstrip("\r\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UsageError("no text to score (only empty lines)")
    return texts


def cmd_finetune(args):
    from electra.config import preset_config
    from electra.finetune import PRESET_LR, FinetuneConfig, finetune, summary_line
    from electra.tasks import GLUE, custom_task, detect_format, load_task
    from electra.tokenizer import load_tokenizer
    from electra.train import set_cpu_threads

    seeds = _parse_seeds(args.seeds)
    if args.task == "custom":
        folder = Path(args.data)
        spec = custom_task(detect_format(folder), args.text_column, args.text_pair_column, args.label_column,
                           args.regression, folder)
    else:
        spec = GLUE[args.task]
    task = load_task(spec, args.data)
    set_cpu_threads(args.threads)  # before loading a model: its copies may start the worker threads
    if args.model == "none":
        if not args.tokenizer:
            raise UsageError("--model none needs --tokenizer DIR (a run or a tokenizer folder) for its vocabulary")
        tokenizer = load_tokenizer(args.tokenizer)
        from dataclasses import replace
        model_cfg = replace(preset_config(args.preset).model, vocab_size=tokenizer.get_vocab_size())
        encoder_state, preset, source = None, args.preset, f"none (random {args.preset})"
    else:
        from electra.inference import load_run

        loaded = load_run(args.model, args.step)
        tokenizer, model_cfg = loaded.tokenizer, loaded.cfg.model
        encoder_state = loaded.model.encoder.state_dict()  # the discriminator's, or the masked LM's
        preset = ("large" if model_cfg.hidden_size >= 1024 else "base" if model_cfg.hidden_size >= 768
                  else "small" if model_cfg.hidden_size >= 256 else "tiny")  # the lr goes by model size
        source = f"{args.model} step {loaded.step}"
    if args.max_length > model_cfg.max_position_embeddings:
        raise UsageError(f"--max-length {args.max_length} exceeds the model's {model_cfg.max_position_embeddings} "
                         "positions")
    cfg = FinetuneConfig(lr=args.lr or PRESET_LR.get(preset, 3e-4), batch_size=args.batch_size,
                         epochs=args.epochs or spec.epochs, max_length=args.max_length,
                         layer_decay=args.layer_decay)
    report = finetune(spec, task, cfg, model_cfg, tokenizer, encoder_state, args.out, seeds, source,
                      args.device, show_progress=not args.no_progress)
    print(summary_line(report))
    print(f"best seed {report['best_seed']}: model, metrics.json and predictions/ in {args.out}")


def cmd_compare(args):
    from electra.compare import compare
    from electra.config import parse_set_args

    seeds = _parse_seeds(args.seeds)
    overrides = parse_set_args(args.set)
    if args.doc_sep:
        overrides["data.doc_sep"] = args.doc_sep
    results = compare(args.corpus, args.budget, args.task, args.data, args.out, seeds, args.preset, overrides,
                      args.epochs, show_progress=not args.no_progress)
    for name, r in results.items():
        print(f"{name:<8} {args.task} dev {r['metric']} median {r['median']:.2f} (seeds "
              f"{', '.join(f'{v:.2f}' for v in r['seeds'])}); pre-training {r['pretrain_flops']:.3g} FLOPs")
    print(f"report: {Path(args.out) / 'report.html'}")


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds names no seed")
    return seeds


def cmd_bench(args):
    from electra.bench import run_bench
    from electra.config import apply_overrides, parse_set_args, preset_config
    from electra.train import set_cpu_threads

    set_cpu_threads(args.threads)
    if args.reference == "hf":
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            raise UsageError("--reference hf needs `transformers` (pip install transformers)")
    cfg = apply_overrides(preset_config(args.preset), {
        "train.batch_size": args.batch, "data.seq_len": args.seq_len, "model.vocab_size": args.vocab_size,
        "objective.kind": args.objective, **parse_set_args(args.set)})
    result = run_bench(cfg, args.device, args.dtype, args.compile, args.steps, args.warmup, args.reference)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset} {result['device']} {result['precision']}{f' compiled ({args.compile})' if args.compile else ''}, "
          f"{result['threads']} threads, batch {args.batch} x {args.seq_len}, vocab {args.vocab_size}:")
    print(f"  {result['tokens_per_s']:,.0f} tokens/s, {result['ms_per_step']:.1f} ms/step, peak memory "
          f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB")
    print(f"  {result['flops_per_token'] / 1e6:,.1f} MFLOPs/token -> {result['achieved_flops'] / 1e9:,.1f} GFLOP/s; "
          f"matmul peak {result['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s; MFU {result['mfu']:.3f}")
    if "reference_tokens_per_s" in result:
        print(f"  transformers ELECTRA pair: {result['reference_tokens_per_s']:,.0f} tokens/s; ours is "
              f"{result['speedup_vs_reference']:.2f}x")


def cmd_report(args):
    from electra.report import read_finetuned, write_report

    results = dict(read_finetuned(spec) for spec in args.finetuned)
    page = write_report(args.runs, args.out or Path(args.runs[0]) / "report", results, args.title)
    print(f"report: {page} (figures beside it)")


def cmd_export(args):
    from electra.export import export_run

    out = export_run(args.model, args.out, args.step, args.force)
    print(f"exported -> {out}/discriminator (ElectraForPreTraining) and {out}/generator (ElectraForMaskedLM)")


def cmd_import(args):
    from electra.export import import_hf

    cfg, notes = import_hf(args.hf, args.out, args.generator, args.preset)
    for note in notes:
        print(f"note: {note}")
    m = cfg.model
    print(f"imported an ELECTRA of {m.num_layers} layers, hidden {m.hidden_size} -> {args.out}; continue "
          f"pre-training with `electra pretrain --out {args.out} --resume --corpus FILE...`")


COMMANDS = {"tokenizer": cmd_tokenizer, "prepare": cmd_prepare, "pretrain": cmd_pretrain,
            "evaluate": cmd_evaluate, "detect": cmd_detect, "finetune": cmd_finetune, "compare": cmd_compare, "bench": cmd_bench, "report": cmd_report, "export": cmd_export, "import": cmd_import}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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

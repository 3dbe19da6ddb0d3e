"""Fine-tuning tasks: the GLUE tasks in their original TSV layout, and custom CSV / TSV / JSONL files.

A task is a `TaskSpec` (where the text and label columns are, the label set or regression, the
main metric, the official number of epochs) and its readers yield `Example`s. The GLUE files' quirks
are handled here: CoLA's train/dev have no header, MRPC's headers start with a byte-order mark,
RTE's labels are words, STS-B's scores are floats in [0, 5], the test files are unlabeled and
carry an `index` column. Metrics come from scikit-learn and SciPy.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from electra.errors import UsageError
from electra.hf_datasets import GLUE_HUB, PREFIX, glue_rows


@dataclass(frozen=True)
class TaskSpec:
    name: str
    folder: str = ""  # GLUE folder name
    text: str | int = "sentence"  # column name, or position in header-less files
    pair: str | int | None = None
    label: str | int | None = "label"
    header: bool = True  # train/dev files have a header (test files always do)
    test_text: str = "sentence"
    test_pair: str | None = None
    labels: tuple[str, ...] | None = ("0", "1")  # None: regression
    label_range: tuple[float, float] | None = None  # regression scores must lie in it
    metric: str = "accuracy"  # the main metric (the paper's median is over it)
    epochs: int = 3
    swap_pairs: bool = False  # official: MRPC and STS-B train on both sentence orders
    file_format: str = "tsv"

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else len(self.labels)


GLUE = {
    "sst2": TaskSpec("sst2", "SST-2"),
    "cola": TaskSpec("cola", "CoLA", text=3, label=1, header=False, metric="mcc"),
    "mrpc": TaskSpec("mrpc", "MRPC", text="#1 String", pair="#2 String", label="Quality",
                     test_text="#1 String", test_pair="#2 String", swap_pairs=True),
    "stsb": TaskSpec("stsb", "STS-B", text="sentence1", pair="sentence2", label="score",
                     test_text="sentence1", test_pair="sentence2", labels=None, label_range=(0.0, 5.0),
                     metric="spearman", epochs=10, swap_pairs=True),
    "rte": TaskSpec("rte", "RTE", text="sentence1", pair="sentence2", test_text="sentence1",
                    test_pair="sentence2", labels=("entailment", "not_entailment"), epochs=10),
}


TRAIN_SUBSET_SEED = 20_200_323  # `--train-size` draws its subset with this seed, for every arm and run


@dataclass
class Example:
    text: str
    pair: str | None
    label: int | float | None  # class index or score; None in test files
    index: str  # the row's id in the file (test: its `index` column; train/dev: the row number)


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    dev: list[Example]
    test: list[Example] = field(default_factory=list)


def task_folder(spec: TaskSpec, data_dir) -> Path:
    """The task's folder: `data_dir` itself, or `data_dir/<GLUE folder>` (the GLUE root)."""
    d = Path(data_dir)
    if spec.folder and (d / spec.folder).is_dir() and not (d / f"train.{spec.file_format}").exists():
        d = d / spec.folder
    if not d.is_dir():
        raise UsageError(f"--data {str(data_dir)!r} is not a directory; give the task's folder "
                         f"(e.g. ../shared/data/glue/{spec.folder or 'SST-2'})")
    return d


def load_task(spec: TaskSpec, data_dir=None, train_size: int | None = None) -> TaskData:
    """The task's examples from its folder, or (`data_dir` None or `hf:...`) through Hugging Face
    `datasets` (GLUE from the hub by default); with `train_size`, a seeded random subset of its
    training set (the same subset on every call: low-resource fine-tuning, where pre-training
    shows first)."""
    if data_dir is None or str(data_dir).startswith(PREFIX):
        train, dev, test = _glue_from_datasets(spec, str(data_dir or f"{PREFIX}{GLUE_HUB}"))
    else:
        d = task_folder(spec, data_dir)
        files = {split: d / f"{split}.{spec.file_format}" for split in ("train", "dev", "test")}
        for split in ("train", "dev"):
            if not files[split].is_file():
                raise UsageError(f"no {files[split].name} in {str(d)!r}; a {spec.name} folder holds "
                                 f"train.{spec.file_format} and dev.{spec.file_format}")
        train = read_examples(spec, files["train"], labeled=True)
        dev = read_examples(spec, files["dev"], labeled=True)
        test = read_examples(spec, files["test"], labeled=False) if files["test"].is_file() else []
    if train_size is not None:
        if not 0 < train_size <= len(train):
            raise UsageError(f"--train-size {train_size}: {spec.name} has {len(train):,} training examples")
        keep = np.sort(np.random.default_rng(TRAIN_SUBSET_SEED).permutation(len(train))[:train_size])
        train = [train[i] for i in keep]
    return TaskData(spec, train, dev, test)


def _glue_from_datasets(spec: TaskSpec, source: str) -> tuple[list[Example], list[Example], list[Example]]:
    """A GLUE task's splits through `datasets`, as the TSV readers give them (labels as class
    indices, in the same order: HF's GLUE numbers them as the TSV files write them)."""
    if spec.name not in GLUE:
        raise UsageError("a custom task is read from its files; give --data DIR")
    splits = []
    for split in ("train", "dev", "test"):
        rows = glue_rows(spec.name, source, split)
        if not rows and split != "test":
            raise UsageError(f"{source!r} has no {split} rows for {spec.name}")
        splits.append([Example(text, pair, None if label is None else (float(label) if spec.regression else int(label)),
                               index) for text, pair, label, index in rows])
    return tuple(splits)


def read_examples(spec: TaskSpec, path: Path, labeled: bool) -> list[Example]:
    rows, columns = _read_rows(path, spec.file_format, spec.header or not labeled)
    if not rows:
        raise UsageError(f"{str(path)!r} has no examples; give a file with rows of data")
    text_col = spec.text if labeled else spec.test_text
    pair_col = spec.pair if labeled else spec.test_pair
    wanted = [c for c in (text_col, pair_col, spec.label if labeled else None) if c is not None]
    if not labeled and spec.file_format == "tsv" and spec.folder:
        wanted.append("index")
    if columns is not None:
        missing = [c for c in wanted if isinstance(c, str) and c not in columns]
        if missing:
            raise UsageError(f"{str(path)!r} has no column {missing[0]!r} (its columns: "
                             f"{', '.join(map(str, columns))}); set the column names (--text-column, "
                             "--text-pair-column, --label-column)")
    examples = []
    for number, row in rows:
        where = f"{path.name} line {number}"
        try:
            text = row[text_col]
            pair = row[pair_col] if pair_col is not None else None
        except (KeyError, IndexError, TypeError):
            raise UsageError(f"{where}: too few columns ({len(row)}); is this the {spec.name} layout?") from None
        label = _parse_label(spec, row, where) if labeled else None
        index = str(row["index"]) if (not labeled and "index" in (columns or ())) else str(len(examples))
        examples.append(Example(str(text), None if pair is None else str(pair), label, index))
    return examples


def _parse_label(spec: TaskSpec, row, where: str):
    try:
        raw = row[spec.label]
    except (KeyError, IndexError, TypeError):
        raise UsageError(f"{where}: no label column {spec.label!r}") from None
    raw = str(raw).strip()
    if spec.regression:
        try:
            score = float(raw)
        except ValueError:
            raise UsageError(f"{where}: label {raw!r} is not a number; {spec.name} is a regression task") from None
        if not np.isfinite(score) or (spec.label_range and not spec.label_range[0] <= score <= spec.label_range[1]):
            lo, hi = spec.label_range or (float("-inf"), float("inf"))
            raise UsageError(f"{where}: score {raw} is outside {spec.name}'s range [{lo:g}, {hi:g}]")
        return score
    if raw not in spec.labels:
        raise UsageError(f"{where}: label {raw!r} is not one of {spec.name}'s labels "
                         f"({', '.join(spec.labels)})")
    return spec.labels.index(raw)


def _read_rows(path: Path, file_format: str, header: bool):
    """[(line number, row)] with rows as dicts (files with a header, JSONL) or lists; and the columns."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {str(path)!r} ({e.strerror})")
    if b"\x00" in raw[:4096]:
        raise UsageError(f"{str(path)!r} looks binary (it has NUL bytes); give a text file")
    text = raw.decode("utf-8-sig", errors="replace")
    if file_format == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise UsageError(f"{path.name} line {number} is not valid JSON ({e})") from None
                if not isinstance(obj, dict):
                    raise UsageError(f"{path.name} line {number} is not a JSON object")
                rows.append((number, obj))
        return rows, sorted({k for _, r in rows for k in r})
    lines = text.splitlines()
    if file_format == "tsv":  # GLUE: split on tabs, no quoting (quotes are part of the text)
        split = [line.split("\t") for line in lines]
    else:
        split = list(csv.reader(lines))
    numbered = [(i, r) for i, r in enumerate(split, 1) if any(c.strip() for c in r)]
    if not header:
        return numbered, None
    if not numbered:
        return [], None
    columns = numbered[0][1]
    return [(i, dict(zip(columns, r)) if len(r) >= len(columns) else r) for i, r in numbered[1:]], columns


def custom_task(file_format: str, text_column: str, pair_column: str | None, label_column: str,
                regression: bool, data_dir) -> TaskSpec:
    """A task from CSV / TSV / JSONL files with a header; classification labels are the train
    file's distinct values, sorted."""
    if not text_column or not label_column:
        raise UsageError("--task custom needs --text-column and --label-column")
    spec = TaskSpec("custom", text=text_column, pair=pair_column, label=label_column, test_text=text_column,
                    test_pair=pair_column, labels=None if regression else (), metric="pearson" if regression
                    else "accuracy", file_format=file_format)
    if regression:
        return spec
    train = task_folder(spec, data_dir) / f"train.{file_format}"
    if not train.is_file():
        raise UsageError(f"no {train.name} in {str(data_dir)!r}; a custom task holds train.{file_format} and "
                         f"dev.{file_format}")
    rows, columns = _read_rows(train, file_format, header=True)
    if columns is not None and label_column not in columns:
        raise UsageError(f"{str(train)!r} has no column {label_column!r} (its columns: {', '.join(columns)})")
    labels = tuple(sorted({str(r[label_column]).strip() for _, r in rows if isinstance(r, dict)}))
    if len(labels) < 2:
        raise UsageError(f"{str(train)!r} has {len(labels)} distinct label(s); classification needs at least 2")
    return replace(spec, labels=labels)


def task_spec(name: str, data_dir, text_column: str | None = None, pair_column: str | None = None,
              label_column: str | None = None, regression: bool = False) -> TaskSpec:
    """A GLUE task by name, or "custom" from the files in `data_dir` and the columns given."""
    if name != "custom":
        return GLUE[name]
    if data_dir is None or str(data_dir).startswith(PREFIX):
        raise UsageError("--task custom reads its train and dev files from a folder; give --data DIR")
    return custom_task(detect_format(data_dir), text_column, pair_column, label_column, regression, data_dir)


def detect_format(data_dir) -> str:
    d = Path(data_dir)
    for fmt in ("tsv", "csv", "jsonl"):
        if (d / f"train.{fmt}").is_file():
            return fmt
    raise UsageError(f"no train.tsv, train.csv or train.jsonl in {str(data_dir)!r}")


# --------------------------------------------------------------------------- metrics

def task_metrics(spec: TaskSpec, labels, predictions) -> dict[str, float]:
    """The task's metrics: accuracy (+F1 for MRPC, Matthews correlation for CoLA) for classification,
    Pearson and Spearman for regression."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if spec.regression:
        if np.std(predictions) == 0 or np.std(labels) == 0:  # correlation undefined: no skill shown
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": float(pearsonr(predictions, labels)[0]),
                "spearman": float(spearmanr(predictions, labels)[0])}
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    if spec.name == "mrpc" or (spec.metric == "accuracy" and spec.num_outputs == 2 and spec.name == "custom"):
        out["f1"] = float(f1_score(labels, predictions, zero_division=0.0))
    if spec.name == "cola":
        out["mcc"] = float(matthews_corrcoef(labels, predictions))
    return out

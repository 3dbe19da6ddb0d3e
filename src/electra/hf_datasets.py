"""Corpora and GLUE tasks through Hugging Face `datasets` (the optional `hf` extra).

`HFDataset` is a corpus named `hf:NAME[:CONFIG[:SPLIT]]`: a hub dataset (streamed, never loaded or
cached whole), a local data file or folder of them (parquet, json/jsonl, arrow, csv, txt; streamed
too), or a `save_to_disk` folder (memory-mapped). Each row's text field is text whose lines are the
corpus's lines, so documents and `--doc-sep` work as for files. `glue_rows` reads a GLUE task the
same way (`nyu-mll/glue` on the hub, or a local `save_to_disk` copy of its splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from electra.errors import UsageError

PREFIX = "hf:"
GLUE_HUB = "nyu-mll/glue"
LOCAL_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow", ".csv": "csv",
                 ".txt": "text"}
OFFLINE_HINT = ("without network, give local text (--corpus FILE...) or a local dataset: hf:PATH to a "
                "parquet, json or arrow file, or a save_to_disk folder")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError("hf: corpora and GLUE by name need Hugging Face `datasets`: pip install -e \".[hf]\"") from None
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:NAME[:CONFIG[:SPLIT]]` -> (NAME, CONFIG, SPLIT); empty parts are None."""
    name, config, split = (spec[len(PREFIX):].split(":") + ["", ""])[:3]
    if not name:
        raise UsageError(f"{spec!r} names no dataset; write hf:NAME[:CONFIG[:SPLIT]], e.g. "
                         "hf:Salesforce/wikitext:wikitext-2-raw-v1:train")
    return name, config or None, split or None


def open_dataset(name: str, config: str | None, split: str | None):
    """A local `save_to_disk` folder, a local data file or folder, or a hub dataset (streamed)."""
    datasets = _datasets()
    path = Path(name)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if (split or "train") not in ds:
                    raise UsageError(f"{name!r} has no split {split or 'train'!r} (its splits: {', '.join(ds)})")
                ds = ds[split or "train"]
            return ds
        if path.exists():
            files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix in LOCAL_FORMATS)
            kinds = {LOCAL_FORMATS.get(f.suffix) for f in files}
            if not files or None in kinds or len(kinds) > 1:
                raise UsageError(f"{name!r}: give one kind of data file ({', '.join(LOCAL_FORMATS)}) or a "
                                 "save_to_disk folder")
            return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split=split or "train",
                                         streaming=True)
        return datasets.load_dataset(name, config, split=split or "train", streaming=True)
    except UsageError:
        raise
    except ConnectionError as e:
        raise UsageError(f"cannot reach the Hugging Face hub for {name!r} ({_first_line(e)}); {OFFLINE_HINT}") from None
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UsageError(f"cannot load the dataset {name!r}{f' ({config})' if config else ''}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


@dataclass(frozen=True)
class HFDataset:
    """A corpus through `datasets`: `hf:NAME[:CONFIG[:SPLIT]]`, text from each row's `text_field`."""

    spec: str
    text_field: str = "text"

    def __str__(self) -> str:
        return self.spec if self.text_field == "text" else f"{self.spec} ({self.text_field})"

    def rows(self) -> Iterator[str]:
        for row in open_dataset(*parse_spec(self.spec)):
            if self.text_field not in row:
                raise UsageError(f"{self.spec!r} has no column {self.text_field!r} (its columns: "
                                 f"{', '.join(row)}); name the text column with --text-field")
            text = row[self.text_field]
            if not isinstance(text, str):
                raise UsageError(f"{self.spec!r}: column {self.text_field!r} holds {type(text).__name__}, not text; "
                                 "name the text column with --text-field")
            yield text

    def check(self):
        """Fail early (no dataset, no network, no such column); an empty dataset is no corpus."""
        if next(self.rows(), None) is None:
            raise UsageError(f"{self.spec!r} has no rows; give a dataset with text")


# GLUE on the hub: each task's text columns (the label column is `label`, the row id `idx`)
GLUE_TEXT_COLUMNS = {"sst2": ("sentence", None), "cola": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
                     "stsb": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}
GLUE_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def glue_rows(task: str, spec: str, split: str) -> list[tuple[str, str | None, float | int | None, str]]:
    """(text, pair, label, index) of a GLUE task's split, from `spec` (hf:nyu-mll/glue, or hf:PATH of
    a local save_to_disk copy with train/validation/test splits); test labels are None."""
    name, config, _ = parse_spec(spec)
    if split == "test" and Path(name).is_dir() and not _has_split(name, "test"):
        return []
    ds = open_dataset(name, config or (task if not Path(name).exists() else None), GLUE_SPLITS[split])
    text, pair = GLUE_TEXT_COLUMNS[task]
    out = []
    for i, row in enumerate(ds):
        label = row.get("label")
        out.append((row[text], row[pair] if pair else None, None if label is None or label == -1 else label,
                    str(row.get("idx", i))))
    return out


def _has_split(folder: str, split: str) -> bool:
    dataset_dict = Path(folder) / "dataset_dict.json"
    return dataset_dict.is_file() and GLUE_SPLITS[split] in dataset_dict.read_text()

"""Outputs that appear whole or not at all.

Every command that writes a directory (a run, prepared data, a checkpoint, an export, fine-tuning
results) builds it under a temporary name beside its destination and renames it into place when it
is complete (`building_dir`); on any error, the temporary folder is removed and whatever was at the
destination is untouched. `require_empty_dir` refuses an output that already holds something.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from electra.errors import UsageError


def require_empty_dir(path, fix: str = "choose a new --out") -> Path:
    """`path` as a Path, if it is absent or an empty directory; otherwise a UsageError ending in `fix`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{str(path)!r} already exists and is not empty; {fix}")
    return path


@contextlib.contextmanager
def building_dir(final):
    """Yield an empty folder beside `final` to build it in; rename it to `final` when the block
    completes (an existing `final` is replaced only then), remove it if the block raises."""
    final = Path(final)
    tmp = temp_dir_beside(final)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temp_dir_beside(path: Path) -> Path:
    """An empty folder next to `path`, to build it in and rename when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)
    return tmp


def replace_dir(tmp: Path, final: Path):
    """Move `tmp` to `final`; an existing `final` is removed only once `tmp` is complete."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, final)


def write_text_atomic(path, text: str):
    """Write to a temporary file and rename it over `path`: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2))


def fsync_path(path: Path):
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Checkpoints as safetensors + JSON (never pickle), written atomically, the last k kept.

A checkpoint is a directory `checkpoints/step-00001000/` with `model.safetensors` (shared tensors
stored once), `optimizer.safetensors` (AdamW moments and the RNG states) and `state.json` (step,
elapsed time, optimizer hyperparameters, the resolved config). It is built under a temporary name,
fsynced and renamed, so a crash never leaves a half-written checkpoint under a real name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file

from electra.atomic import building_dir, fsync_path
from electra.errors import UsageError

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def latest_valid_checkpoint(run_dir, warn=print) -> Path | None:
    """The newest checkpoint whose files match the sizes and hashes its state recorded; a damaged
    one (truncated, corrupted, half-deleted) is skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        warn(f"warning: checkpoint {ckpt.name} is damaged ({problem}); using the one before it")
    return None


def checkpoint_problem(path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted, or None: an unreadable state, or a file whose
    size or SHA-256 differs from what was written."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        files = state.get("files", {})
    except (OSError, ValueError, AttributeError) as e:
        return f"{STATE_FILE} unreadable: {e}"
    for name, record in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != record["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, {record['bytes']} were written"
        if _file_record(f)["sha256"] != record["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def _file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def save_checkpoint(run_dir, step: int, model: torch.nn.Module, optimizer=None,
                    state: dict | None = None, keep: int = 3) -> Path:
    """Write `checkpoints/step-N` atomically and prune to the last `keep`. Refuses non-finite
    weights, so a diverged model never replaces a good checkpoint."""
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UsageError(f"not writing checkpoint {checkpoint_name(step)}: non-finite values in {bad[0]}; "
                         "the previous checkpoint is kept (lower train.lr and --resume)")
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    with building_dir(final) as tmp:  # the same step saved again (the final step) replaces the old one
        save_file(unique_tensors(model.state_dict()), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        state = dict(state or {}, step=step)
        tensors = rng_state_tensors()
        if optimizer is not None:
            opt_tensors, state["optimizer"] = _flatten_optimizer(optimizer.state_dict())
            tensors.update(opt_tensors)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        state["files"] = {name: _file_record(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE)}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        for f in tmp.iterdir():
            fsync_path(f)
    fsync_path(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once, under the first of its names in sorted order (the
    name safetensors' `save_model` keeps; `load_model` restores the sharing from the model). Unlike
    `save_model`, no metadata lists the dropped aliases: safetensors writes metadata from a hash map,
    in a different order in every process, and the file would differ from run to run."""
    kept = {}
    for name in sorted(state):
        t = state[name]
        kept.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype), name)
    return {name: state[name].detach().contiguous() for name in kept.values()}


def remove_stale_temporaries(run_dir):
    """Temporary checkpoint folders left by a process killed while writing one."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".step-") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path, model: torch.nn.Module, optimizer=None, restore_rng: bool = False,
                    verify: bool = True) -> dict:
    """Load weights (strictly) and optionally the optimizer and RNG; return the JSON state."""
    path = Path(path)
    problem = checkpoint_problem(path) if verify else None
    if problem:
        raise UsageError(f"checkpoint {str(path)!r} is damaged ({problem}); pick an earlier --step")
    try:
        state = json.loads((path / STATE_FILE).read_text())
        missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False)
        tensors = load_file(str(path / OPTIMIZER_FILE)) if (optimizer or restore_rng) else {}
    except (OSError, ValueError, SafetensorError) as e:
        raise UsageError(f"checkpoint {str(path)!r} cannot be read ({e}); it may be truncated")
    except RuntimeError as e:  # tensor shapes differ from the config's
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
        raise UsageError(f"checkpoint {str(path)!r} was written for another architecture than its "
                         f"config.json describes ({detail})")
    if missing or unexpected:
        raise UsageError(f"checkpoint {str(path)!r} does not match the model: missing "
                         f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    if optimizer is not None and "optimizer" in state:  # an imported checkpoint has no optimizer state
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    if restore_rng:
        torch.set_rng_state(tensors["rng.cpu"])
        if torch.cuda.is_available() and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state


def rng_state_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, entry in sd["state"].items():
        meta["state"][str(idx)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
                meta["state"][str(idx)][name] = None
            else:
                meta["state"][str(idx)][name] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {name: tensors[f"optim.{idx}.{name}"] if value is None else value
                           for name, value in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}

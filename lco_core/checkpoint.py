"""Atomic, self-verifying checkpoints: `root/step-N/` is a Hugging Face model dir plus state.

A checkpoint is written into a temp dir beside its final name, every file fsynced, then
`manifest.json` (each file's size and sha256) last, then one `os.rename` publishes it. So
`step-N/` either does not exist or is complete, and a crash leaves only a `.tmp-*` dir that
is never listed (and `prune_temp_dirs` deletes). Readers trust a dir only if its manifest
checks out. Besides the weights the dir holds the tokenizer and `train_state.pt` (step,
optimiser, scheduler, run summary; no RNG states: the trainer reseeds from (seed, step)), loadable with `torch.load(weights_only=True)`:

    path = save_checkpoint(run / "checkpoints", step, model, tokenizer, trainer.state_dict())
    latest = latest_checkpoint(run / "checkpoints")      # None if there is none
    AutoModelForCausalLM.from_pretrained(latest); state = load_train_state(latest)

Importing this module does not import torch (only saving and loading state do), so the
worker's supervisor can list, verify and prune a run's checkpoints without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAIN_STATE = "train_state.pt"
MANIFEST_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Hidden names: never mistaken for a checkpoint, and skipped by `ls`-style listings.
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_HASH_CHUNK = 1 << 20


def save_checkpoint(
    root: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_state: dict[str, Any],
    model_state: dict[str, Any] | None = None,
) -> Path:
    """Write `root/step-{step}` atomically and return its path. An existing checkpoint of
    the same step (a resumed run redoing steps) is replaced. `model_state` is the weights to
    write when `model`'s own are sharded (lco_core.distributed gathers them)."""
    import torch

    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    state = _weights_only_safe(train_state, "train_state")
    # Same directory as the final name: same filesystem, so the rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}step-{step}-", dir=root))
    try:
        # transformers 5 always writes safetensors (the old safe_serialization flag is gone).
        if model_state is None:
            model.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp, state_dict=model_state)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / TRAIN_STATE)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            size, digest = _fsync_and_hash(path)
            files[path.relative_to(tmp).as_posix()] = {"size": size, "sha256": digest}
        if not any(name.endswith(".safetensors") for name in files):
            raise RuntimeError("the model was not saved as safetensors")
        manifest = {
            "format": MANIFEST_FORMAT,
            "step": step,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
        }
        with (tmp / MANIFEST).open("w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        # mkdtemp makes the dir private (0700): give it a model dir's usual mode.
        os.chmod(tmp, 0o755)
        fsync_dir(tmp)
        trash = None
        if final.exists():
            # rename() cannot replace a non-empty dir: move the old one aside first.
            trash = Path(tempfile.mkdtemp(prefix=f"{_TRASH_PREFIX}step-{step}-", dir=root))
            os.rename(final, trash / final.name)
        os.rename(tmp, final)
        fsync_dir(root)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("checkpoint.saved", extra={"path": str(final), "step": step})
    return final


def verify_checkpoint(path: Path, full: bool = True) -> bool:
    """True if `path` has a manifest whose files all exist with the recorded sizes (and,
    when `full`, the recorded sha256), and its step matches the dir name."""
    path = Path(path)
    match = _STEP_DIR.match(path.name)
    if match is None or not path.is_dir():
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("step") != int(match[1]):
            return False
        files = manifest["files"]
        if TRAIN_STATE not in files:
            return False
        for name, meta in files.items():
            file = path / name
            if not file.is_file() or file.stat().st_size != meta["size"]:
                return False
            if full and _sha256(file) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def list_checkpoints(root: Path, *, verify_hashes: bool = False) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first. Sizes are always checked;
    `verify_hashes` also re-hashes every file (slow for large models)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and verify_checkpoint(child, full=verify_hashes):
            found.append((int(match[1]), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: Path, *, verify_hashes: bool = True) -> Path | None:
    """The newest complete checkpoint, or None. Hashes are checked by default since this
    picks what a run resumes from; only the candidates tried are hashed, newest first."""
    for path in reversed(list_checkpoints(root)):
        if not verify_hashes or verify_checkpoint(path, full=True):
            return path
        log.warning("checkpoint.corrupt", extra={"path": str(path)})
    return None


def load_train_state(path: Path) -> dict[str, Any]:
    """The `train_state` dict saved with the checkpoint at `path` (tensors on CPU)."""
    import torch

    state = torch.load(Path(path) / TRAIN_STATE, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path / TRAIN_STATE} does not hold a dict")
    return state


def prune_temp_dirs(root: Path) -> int:
    """Delete leftovers of interrupted saves under `root`; returns how many. Call it only
    when no save into `root` can be running (one trainer owns a run's checkpoint dir)."""
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def fsync_dir(path: Path) -> None:
    """fsync a directory, which makes the renames and creations inside it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then `root` itself."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def _fsync_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb+") as f:
        os.fsync(f.fileno())
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)


def _weights_only_safe(value: Any, where: str) -> Any:
    """A copy of `value` that `torch.load(weights_only=True)` can read back: numpy arrays and
    scalars (e.g. `np.random.get_state()`) become lists and Python numbers; any other type
    is refused here, at save time, rather than found unloadable at resume time."""
    import torch

    if isinstance(value, (*_PRIMITIVES, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return value
    if isinstance(value, dict):
        return {k: _weights_only_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    # numpy without importing it: arrays have tolist(), numpy scalars item().
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        return value.tolist()
    raise TypeError(
        f"{where} has type {type(value).__name__}, which torch.load(weights_only=True) "
        "cannot read; store tensors, numbers, strings, lists or dicts"
    )

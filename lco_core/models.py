"""Model names to loaded models: the built-in `lco-tiny`, local dirs (a LoRA job's adapter
dir loads as its base with the adapter merged in), and cached hub ids.

Nothing is downloaded at run time: a hub id resolves only if it is already in the local
Hugging Face cache, and anything else is a clear `ValueError` rather than a network hang.
Remote code is never trusted.

    path = resolve_model("lco-tiny")                  # ships built with the package
    model, tokenizer = load_model_and_tokenizer(path, device=pick_device("auto"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lco_core.lora import is_adapter_dir, load_merged
from lco_core.tiny_model import TINY_MODEL_NAME, ensure_tiny_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def resolve_model(name_or_path: str) -> str:
    """A local directory holding the model `name_or_path` names, or `ValueError`."""
    if not name_or_path or not name_or_path.strip():
        raise ValueError("unknown model '': the model name is empty")
    if name_or_path == TINY_MODEL_NAME:
        return str(ensure_tiny_model())
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and not is_adapter_dir(local):
            raise ValueError(f"unknown model {name_or_path!r}: the directory has no config.json")
        return str(local)
    return _cached_hub_snapshot(name_or_path)


def _cached_hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        # local_files_only: answer from the cache or fail at once, never touch the network.
        path = Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except Exception as exc:  # invalid ids, cache misses, offline errors: all "unknown"
        raise ValueError(
            f"unknown model {repo_id!r}: not {TINY_MODEL_NAME!r}, not a local model directory, "
            f"and not in the local Hugging Face cache ({type(exc).__name__})"
        ) from None
    if not (path / "config.json").is_file():
        raise ValueError(f"unknown model {repo_id!r}: its cached snapshot has no config.json")
    return str(path)


def load_model_and_tokenizer(
    name_or_path: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (no remote code), the model on `device`."""
    path = resolve_model(name_or_path)
    model: PreTrainedModel
    if is_adapter_dir(path):
        # A LoRA job's model or checkpoint: its base with the adapter folded in. Named by the
        # adapter's dir, so an adapter trained on top of it records that dir as its base.
        model = load_merged(path, torch.device("cpu"), dtype)
        model.name_or_path = path
    else:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=False, local_files_only=True
        )
    # PreTrainedModel.to's stub is wrapped in a way mypy misreads; it is nn.Module.to.
    model.to(torch.device(device))  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    if tokenizer.pad_token_id is None:
        # Batched rollouts and training need a pad id; eos is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    log.info("model.loaded", extra={"path": path, "device": str(device), "dtype": str(dtype)})
    return model, tokenizer


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout of `model` to 0 (its `nn.Dropout` modules, a LoRA adapter's
    included, and the attention dropout that HF attention layers read from an attribute);
    returns how many were on. RL needs it: a train-mode pass with dropout is not the policy
    the rollouts were sampled from."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            changed += 1
        for name in ("attention_dropout", "attn_dropout_p"):
            value = getattr(module, name, None)
            if isinstance(value, float) and value > 0:
                setattr(module, name, 0.0)
                changed += 1
    return changed


def pick_device(pref: str) -> torch.device:
    """`"auto"` -> cuda if available, else cpu; anything else as torch spells it, checked."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {pref!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} was requested but CUDA is not available")
    return device

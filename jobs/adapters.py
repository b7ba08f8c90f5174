"""LoRA checkpoints on the service side, without torch: tell an adapter dir from a model dir,
name its base, and fold it into its base as a plain Hugging Face model (the
`?format=merged` download).

A LoRA job's checkpoint holds `adapter_config.json` (peft's; `base_model_name_or_path` is
the local dir of the model it was trained on, itself an adapter dir when the job started
from another LoRA job's model) and `adapter_model.safetensors` with, for each adapted
linear layer `P.weight`, `base_model.model.P.lora_A.weight` [r, in] and `...lora_B.weight`
[out, r]. The merged weight is W + (alpha / r) B A, as `peft`'s `merge_and_unload` computes
it (in float32, stored in W's dtype); numpy does it here so the API process never loads
torch.

    if is_adapter_dir(ckpt): merge_adapter(ckpt, out_dir)   # out_dir: a loadable HF model
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# What a merged model dir takes from the adapter dir beside the weights: the tokenizer the
# job trained with (the model's config and generation config come from the base).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                    "special_tokens_map.json", "vocab.json", "merges.txt",
                    "tokenizer.model")  # fmt: skip
# A base model dir's files that are not weights and describe the model.
_MODEL_FILES = ("config.json", "generation_config.json")


class MergeError(ValueError):
    """The adapter cannot be merged here (its base is gone, or stored in a dtype numpy
    lacks)."""


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: Path) -> Path:
    """The dir of the model the adapter at `path` was trained on."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise MergeError(f"{path / ADAPTER_CONFIG} does not name its base model")
    return Path(base)


def merge_adapter(adapter_dir: Path, out_dir: Path) -> None:
    """Write into `out_dir` (existing, empty) the full model `adapter_dir` stands for: the
    base's config, the merged weights as one `model.safetensors`, the adapter's tokenizer."""
    root, tensors = _merged_tensors(Path(adapter_dir))
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for name in _MODEL_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, out_dir / name)
    source = Path(adapter_dir)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)


def _merged_tensors(adapter_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(the root base model dir, the merged weights) of an adapter, folding a chain of
    adapters into their root base in the order they were trained."""
    base = adapter_base(adapter_dir)
    if is_adapter_dir(base):
        root, tensors = _merged_tensors(base)
    else:
        root, tensors = base, _load_dir(base)
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    r = int(config["r"])
    alpha = float(config["lora_alpha"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    adapter = _load_file(adapter_dir / ADAPTER_WEIGHTS)
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix(_PREFIX)
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        name = f"{module}.weight"
        if name not in tensors:
            raise MergeError(f"the adapter adapts {name}, which the base model {base} lacks")
        w = tensors[name]
        delta = scale * (b.astype(np.float32) @ a.astype(np.float32))
        tensors[name] = (w.astype(np.float32) + delta).astype(w.dtype)
    return root, tensors


def _load_dir(path: Path) -> dict[str, np.ndarray]:
    if not path.is_dir():
        raise MergeError(f"the base model dir {path} is gone")
    tensors: dict[str, np.ndarray] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(_load_file(file))
    if not tensors:
        raise MergeError(f"the base model dir {path} holds no *.safetensors weights")
    return tensors


def _load_file(file: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(file), framework="numpy") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (TypeError, ValueError) as exc:  # bfloat16: numpy has no such dtype
        raise MergeError(f"cannot read {file} without torch: {exc}") from None

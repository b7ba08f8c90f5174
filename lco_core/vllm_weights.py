"""The weights a vLLM engine serves, as files and as digests.

vLLM's in-place reload does not refresh a tied LM head (measured: 0.8+ nats off), so the
engine always serves an *untied* copy of the model: a config with
`tie_word_embeddings=False` and an explicit `lm_head.weight` in every file written here
(`engine_state_dict`, `write_weights`, `untie_checkpoint`); the values are the same, so
logprobs are too. `WorkerWeights` runs inside vLLM's worker and reports a digest of what it
really serves (`weight_digest`), for bit-exact checks of a sync.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lco_core.lora import has_lora_layers, merged_state_dict

if TYPE_CHECKING:
    from transformers import PreTrainedModel

WEIGHTS_FILE = "model.safetensors"


def engine_state_dict(
    model: PreTrainedModel, dtype: torch.dtype, *, explicit_head: bool = True
) -> dict[str, torch.Tensor]:
    """The model's state dict as CPU tensors of `dtype` (floating ones), in HF checkpoint
    names. With `explicit_head` a tied head is written as its own copy under
    `lm_head.weight`; without it, tied duplicates are dropped as `save_pretrained` does."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    # A LoRA job's model serves its adapter folded in (lco_core.lora; README "LoRA").
    state = merged_state_dict(model) if has_lora_layers(model) else model.state_dict()
    for name, tensor in state.items():
        t = tensor.detach()
        t = t.to("cpu", dtype) if t.is_floating_point() else t.to("cpu")
        storage = t.untyped_storage().data_ptr()
        if storage in seen:  # a tied weight: safetensors refuses shared storage
            if not explicit_head:
                continue
            t = t.clone()
        seen.add(storage)
        out[name] = t.contiguous()
    head = model.get_output_embeddings()
    if explicit_head and "lm_head.weight" not in out and head is not None:
        out["lm_head.weight"] = head.weight.detach().to("cpu", dtype).clone()
    return out


def weight_digest(tensor: torch.Tensor) -> str:
    """A digest of a tensor's dtype, shape and bytes (bit-exact equality, cheap to send)."""
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.blake2b(f"{t.dtype}:{tuple(tensor.shape)}:".encode(), digest_size=16)
    digest.update(t.view(torch.uint8).numpy().tobytes())  # bytes: numpy has no bfloat16
    return digest.hexdigest()


class WorkerWeights:
    """Mixed into vLLM's worker class (`worker_extension_cls`), so the engine can ask the
    worker process what it really serves, by name through `collective_rpc`, without
    shipping code to it (a callable would need pickling)."""

    model_runner: Any  # the worker's, once mixed in

    def lco_weight_digest(self, name: str, rows: int) -> str:
        """`weight_digest` of parameter `name`'s first `rows` rows (vLLM pads vocab-sized
        dims of embeddings and heads to a multiple of 64)."""
        params = dict(self.model_runner.model.named_parameters())
        return weight_digest(params[name].detach()[:rows])


def write_weights(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Atomically replace `directory/model.safetensors` (the temp name does not match
    vLLM's `*.safetensors` glob, so a half-written file is never loaded)."""
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_FILE)


def write_untied_config(config: Any, directory: Path) -> None:
    config.save_pretrained(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data["tie_word_embeddings"] = False
    path.write_text(json.dumps(data, indent=2))


def untie_checkpoint(src: Path, dst: Path) -> None:
    """Copy an HF checkpoint dir whose config ties the embeddings into `dst`, untied: the
    config says untied and the weights carry an explicit `lm_head.weight`."""
    from transformers import AutoConfig

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(src.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[key] = f.get_tensor(key)
    if not tensors:
        raise ValueError(f"{src} holds no *.safetensors weights")
    if "lm_head.weight" not in tensors:
        embed = [k for k in tensors if k.endswith("embed_tokens.weight")]
        if len(embed) != 1:
            raise ValueError(
                f"cannot tell the input embedding of tied model {src}; "
                "use VLLMEngine.from_model(model, tokenizer)"
            )
        tensors["lm_head.weight"] = tensors[embed[0]].clone()
    for item in src.iterdir():
        if item.is_file() and not item.name.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(item, dst / item.name)
    write_untied_config(AutoConfig.from_pretrained(src), dst)
    write_weights(tensors, dst)

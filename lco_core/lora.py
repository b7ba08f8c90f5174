"""LoRA jobs through `peft`: add a trainable adapter to a loaded model, reload one to resume,
fold one into its base, and give the rollout engine merged weights.

The trainers keep working on the plain Hugging Face model: `peft` swaps each targeted
`nn.Linear` for a LoRA layer in place, so `trainer_model(adapter)` (the wrapped model)
runs W x + (alpha / r) B A x in every forward, and only A and B require gradients. The
`PeftModel` handle is what saves the adapter (`adapter_model.safetensors`,
`adapter_config.json`, whose `base_model_name_or_path` is the base model's local dir) and
what switches the adapter off, which is how RL gets the initial policy for KL without a
second copy of the base weights.

    adapter = add_adapter(model, cfg.lora, seed=cfg.seed, param="method.x.hyperparameters.lora")
    model = trainer_model(adapter)                       # train this
    with adapter.disable_adapter(): ...                  # the base model, for reference logprobs
    adapter.save_pretrained(dir)                         # what a checkpoint holds
    model = load_merged(dir)                             # a later job starting from it
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lco_spec.errors import SpecError
from lco_spec.job import LoraConfig

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` holds a peft adapter (a LoRA job's checkpoint) rather than a model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The local dir of the model an adapter was trained on (itself an adapter dir when a
    LoRA job started from another LoRA job's model)."""
    file = Path(path) / ADAPTER_CONFIG
    base = json.loads(file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{file} does not name its base model")
    return str(base)


def add_adapter(model: PreTrainedModel, lora: LoraConfig, *, seed: int, param: str) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter (B = 0, so the wrapped model starts as the
    base). A is drawn from `seed` without touching the global RNG, so a run does not depend
    on what ran before it. Bad targets or ranks are `SpecError`s naming `param.<field>`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora.target_modules
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.resolved_alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if targets == "all-linear" else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    _check_targets(model, lora, param)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            adapter = get_peft_model(model, config)
        except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
            raise SpecError(str(exc), param=f"{param}.target_modules") from None
    _log_sizes(adapter)
    return adapter


def load_adapter(model: PreTrainedModel, path: str | Path, *, trainable: bool) -> PeftModel:
    """`model` (the base) with the adapter saved at `path`: trainable to resume a LoRA run."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


def trainer_model(adapter: PeftModel) -> PreTrainedModel:
    """The Hugging Face model inside `adapter`, its linear layers now LoRA layers: what the
    trainers and rollout engines use (its `base_model_prefix` still names the decoder)."""
    from transformers import PreTrainedModel

    inner = adapter.get_base_model()
    assert isinstance(inner, PreTrainedModel)
    return inner


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict with every LoRA layer folded in (W + scale B A) under the plain
    model's names, the adapter's own tensors left out: the weights a vLLM engine serves.
    The model itself is not changed."""
    from peft.tuners.lora import Linear as LoraLinear

    deltas: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear) and not module.disable_adapters:
            for active in module.active_adapters:
                if active in module.lora_A:
                    delta = module.get_delta_weight(active).detach()
                    key = f"{name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        out[key] = tensor + deltas[key] if key in deltas else tensor
    return out


def has_lora_layers(model: torch.nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def load_merged(path: str | Path, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """The model an adapter dir stands for, as a plain model: its base (loaded the same way,
    so chains of LoRA jobs fold in order) with the adapter merged into the weights."""
    from lco_core.models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(adapter_base(path), device=device, dtype=dtype)
    merged: PreTrainedModel = load_adapter(base, path, trainable=False).merge_and_unload()
    return merged


def _check_targets(model: PreTrainedModel, lora: LoraConfig, param: str) -> None:
    """The named modules exist as linear layers of the model's blocks, and `r` is at most
    each one's smaller side (submission checks this for model families it knows)."""
    head = model.get_output_embeddings()
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    if lora.target_modules == "all-linear":
        chosen = list(linears.values())
    else:
        wanted = set(lora.target_modules)
        chosen = [m for name, m in linears.items() if name.rsplit(".", 1)[-1] in wanted]
        found = {name.rsplit(".", 1)[-1] for name in linears} & wanted
        if missing := sorted(wanted - found):
            names = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise SpecError(
                f"the model has no linear layers named {', '.join(missing)} in its blocks; "
                f"LoRA can target: {', '.join(names)} (or all-linear)",
                param=f"{param}.target_modules",
            )
    if not chosen:
        raise SpecError("the model has no linear layers to adapt", param=f"{param}.target_modules")
    width = min(min(m.in_features, m.out_features) for m in chosen)
    if lora.r > width:
        raise SpecError(
            f"r = {lora.r} is larger than the narrowest layer it adapts ({width}); "
            f"use r <= {width}",
            param=f"{param}.r",
        )


def _log_sizes(adapter: PeftModel) -> None:
    trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    total = sum(p.numel() for p in adapter.parameters())
    log.info("lora.added", extra={"trainable_params": trainable, "total_params": total})

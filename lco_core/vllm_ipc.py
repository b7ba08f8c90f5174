"""CUDA weight sync over IPC for an offline `vllm.LLM`: the client half that vLLM 0.32's
`IPCTrainerWeightTransferEngine` talks to (`LLMSyncClient`), and the trainer's weights as
the `WeightSource` it sends (`weight_source`). Untested here: no GPU on the build machines
(tests/test_vllm_engine.py checks the client's messages on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class LLMSyncClient:
    """vLLM's `VLLMWeightSyncClient` protocol over an offline `vllm.LLM`, which (in 0.32)
    lacks the four methods: each goes to the worker by `collective_rpc`, as `AsyncLLM`'s
    do. The IPC handles are sent pickled and base64-encoded, as vLLM's HTTP client sends
    them (plain strings cross the engine's msgpack channel)."""

    def __init__(self, llm: Any, timeout_s: float) -> None:
        self.llm = llm
        self.timeout_s = timeout_s

    def _call(self, method: str, **kwargs: Any) -> None:
        self.llm.collective_rpc(method, timeout=self.timeout_s, kwargs=kwargs)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._call("init_weight_transfer_engine", init_info=init_info)

    def start_weight_update(self) -> None:
        self._call("start_weight_update")

    def update_weights(self, update_info: Any) -> None:
        infos = update_info if isinstance(update_info, list) else [update_info]
        encoded = [_pickled_handles(info) for info in infos]
        self._call(
            "update_weights", update_info=encoded if isinstance(update_info, list) else encoded[0]
        )

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._call("finish_weight_update")


def _pickled_handles(info: dict[str, Any]) -> dict[str, Any]:
    if info.get("ipc_handles") is None:
        return info
    import base64
    import pickle

    out = {k: v for k, v in info.items() if k not in ("ipc_handles", "ipc_handles_pickled")}
    out["ipc_handles_pickled"] = base64.b64encode(pickle.dumps(info["ipc_handles"])).decode()
    return out


def weight_source(model: PreTrainedModel, dtype: torch.dtype) -> Any:
    """A vLLM `WeightSource` over the trainer's parameters in the engine's dtype, with the
    head named explicitly even when tied (the engine serves an untied model)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    def named() -> Iterator[tuple[str, torch.Tensor]]:
        names = set()
        for name, param in model.named_parameters():
            names.add(name)
            yield name, param
        if "lm_head.weight" not in names:
            yield "lm_head.weight", model.get_output_embeddings().weight

    class Source(WeightSource):
        def metadata(self) -> list[Any]:
            return [ParamMeta(n, dtype, tuple(p.shape)) for n, p in named()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            for name, param in named():
                yield name, param.detach().to(dtype)

    return Source()

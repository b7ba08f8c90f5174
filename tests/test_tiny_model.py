"""The byte tokenizer, lco-tiny (build, cache, competence) and model resolution."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

import lco_core.tiny_model as tiny
from lco_core.models import load_model_and_tokenizer, pick_device, resolve_model
from lco_core.tasks import get_task
from lco_core.tiny_model import (
    BUILD_INFO_FILE,
    TINY_MODEL_NAME,
    ensure_tiny_model,
    task_accuracy,
)
from lco_core.tokenizer import (
    IM_END_ID,
    IM_START_ID,
    PAD_TOKEN_ID,
    VOCAB_SIZE,
    build_byte_tokenizer,
)

TOKENIZER = build_byte_tokenizer()


# -- tokenizer ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips_one_token_per_byte(text: str) -> None:
    ids = TOKENIZER.encode(text, add_special_tokens=False)
    nfc = unicodedata.normalize("NFC", text)
    if "<|" not in text:  # the special tokens' spellings are the one exception to byte ids
        assert ids == list(nfc.encode("utf-8"))
    assert TOKENIZER.decode(ids) == nfc


def test_special_tokens_and_vocab() -> None:
    assert len(TOKENIZER) == VOCAB_SIZE == 259
    assert (TOKENIZER.pad_token_id, TOKENIZER.eos_token_id) == (PAD_TOKEN_ID, IM_END_ID)
    ids = TOKENIZER.encode("<|im_start|>a<|im_end|>", add_special_tokens=False)
    assert ids == [IM_START_ID, ord("a"), IM_END_ID]
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == "a"
    assert TOKENIZER.decode(TOKENIZER.encode(" a .  b ,")) == " a .  b ,"  # no space clean-up


def test_chat_template_is_chatml() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    text = TOKENIZER.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
    prompt = TOKENIZER.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == text + "<|im_start|>assistant\n"
    assert tiny.prompt_ids(TOKENIZER, messages)[-11:] == [IM_START_ID, *b"assistant\n"]


MIXED_UNICODE = [
    "cafe\u0301 x",  # a combining mark (NFD): NFC makes it one code point, as Qwen2 does
    "café x",
    "añb 🤗\n👩\u200d👩\u200d👧 🇯🇵",  # emoji, a ZWJ sequence, a flag
    "日本語のテキスト、中文，한국어",  # CJK and Hangul
    "tab\there\x00nul\x07bell\x1b[0m\r\n\x7f",  # control characters
    "x\u0301\u0327\u0308 \U0001d11e \ufeff",  # stacked marks, astral plane, BOM
    "<|im_start|>user\nhi<|im_end|>\n",
]


def test_tokenizer_loads_back_exactly_as_saved(tmp_path: Path) -> None:
    # A model dir (config.json of a qwen2 model beside the tokenizer files), as lco-tiny's
    # and every checkpoint's: transformers then picks its tokenizer class from the config.
    TOKENIZER.save_pretrained(tmp_path)
    tiny.tiny_config().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(TOKENIZER)
    assert loaded.backend_tokenizer.to_str() == TOKENIZER.backend_tokenizer.to_str()
    for text in MIXED_UNICODE:
        ids = TOKENIZER.encode(text, add_special_tokens=False)
        assert loaded.encode(text, add_special_tokens=False) == ids, text
        assert loaded.decode(ids) == TOKENIZER.decode(ids) == unicodedata.normalize("NFC", text)
    assert len(TOKENIZER.encode("cafe\u0301 x")) == len("café x".encode()) == 7
    messages = [{"role": "user", "content": "x"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        TOKENIZER.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert (len(loaded), loaded.padding_side) == (VOCAB_SIZE, "left")


def test_tiny_model_tokenizer_loads_back_exactly(tiny_model_path: Path) -> None:
    loaded = AutoTokenizer.from_pretrained(tiny_model_path)
    assert loaded.backend_tokenizer.to_str() == TOKENIZER.backend_tokenizer.to_str()
    for text in MIXED_UNICODE:
        assert loaded.encode(text) == TOKENIZER.encode(text), text


# -- lco-tiny ----------------------------------------------------------------------------------
def test_tiny_model_is_a_standard_untied_qwen2(tiny_model_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    assert model.config.model_type == "qwen2" and not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == len(tok) == VOCAB_SIZE
    assert model.config.eos_token_id == IM_END_ID == tok.eos_token_id
    assert model.generation_config.eos_token_id == IM_END_ID
    assert model.generation_config.pad_token_id == PAD_TOKEN_ID
    assert (tiny_model_path / "generation_config.json").is_file()
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_tiny_model_is_partly_competent_on_addition(
    tiny_model_and_tokenizer: tuple[Any, Any],
) -> None:
    model, tok = tiny_model_and_tokenizer
    items = get_task("addition").examples(128, seed=42)
    greedy = task_accuracy(model, tok, items)
    sampled = task_accuracy(model, tok, items, greedy=False, seed=0)
    # Some right, many wrong: reinforcement learning has something to improve.
    assert 0.05 <= greedy.accuracy <= 0.8, greedy
    assert 0.02 <= sampled.accuracy <= 0.8, sampled
    assert greedy.stop_rate == 1.0 and sampled.stop_rate >= 0.95  # it learned to stop


def test_shipped_tiny_model_matches_its_pinned_digests(tiny_model_path: Path) -> None:
    assert tiny_model_path == tiny.TINY_MODEL_DIR == ensure_tiny_model()
    assert tiny.file_digests(tiny_model_path) == tiny.TINY_MODEL_SHA256
    assert {"model.safetensors", "config.json", "tokenizer.json", BUILD_INFO_FILE} <= set(
        tiny.TINY_MODEL_SHA256
    )
    info = json.loads((tiny_model_path / BUILD_INFO_FILE).read_text())
    assert info["version"] == tiny.TINY_MODEL_VERSION and info["final"]["addition_greedy"] > 0


@pytest.mark.parametrize("damage", ["flip_a_byte", "remove_a_file", "add_a_file"])
def test_a_damaged_tiny_model_is_refused(
    tiny_model_path: Path, tmp_path: Path, damage: str
) -> None:
    copy = tmp_path / "lco-tiny"
    shutil.copytree(tiny_model_path, copy)
    assert tiny.verify_tiny_model(copy) == copy
    weights = copy / "model.safetensors"
    if damage == "flip_a_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "remove_a_file":
        (copy / "tokenizer.json").unlink()
    else:
        (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(tiny.TinyModelError, match="does not match its pinned sha256"):
        tiny.verify_tiny_model(copy)
    with pytest.raises(tiny.TinyModelError, match="missing"):
        tiny.verify_tiny_model(tmp_path / "nowhere")


_WEIGHTS_DIGEST = """
import hashlib, sys, torch
from lco_core.models import load_model_and_tokenizer
model, _ = load_model_and_tokenizer("lco-tiny")
h = hashlib.sha256()
for name, t in sorted(model.state_dict().items()):
    h.update(name.encode()); h.update(t.detach().contiguous().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""


def test_two_processes_with_different_cpu_kernels_load_identical_weights() -> None:
    # The weights are the shipped file, so the CPU kernels a machine dispatches to cannot
    # change them (they did when every machine trained its own copy).
    results = []
    for capability in (None, "default"):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        out = subprocess.run(
            [sys.executable, "-c", _WEIGHTS_DIGEST],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.split()
        results.append(out)
    (_, digest_a), (kernels_b, digest_b) = results
    assert kernels_b == "DEFAULT", kernels_b  # the setting took effect
    assert digest_a == digest_b


@pytest.mark.slow
def test_the_recipe_rebuilds_a_partly_competent_model(tmp_path: Path) -> None:
    # Regenerating the asset (a few minutes): the recipe still reaches its targets here. The
    # weights match the shipped ones only on the kernels that built them.
    info = tiny.build_tiny_model(tmp_path)
    assert set(info["target_reached_at"]) == {"addition", "reverse"}, info["history"]
    assert 0.1 <= info["final"]["addition_greedy"] <= 0.8
    assert info["final"]["addition_stop_rate"] >= 0.95
    assert tiny.file_digests(tmp_path).keys() == tiny.TINY_MODEL_SHA256.keys()


def test_lco_tiny_is_the_same_wherever_lco_runs(
    tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lco serve`, `lco train`, the workers and the scripts all get the shipped model:
    neither the working directory nor LCO_HOME moves it, and nothing is written to a cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LCO_HOME", str(tmp_path / "home"))
    assert resolve_model(TINY_MODEL_NAME) == str(tiny.TINY_MODEL_DIR) == str(tiny_model_path)
    assert list(tmp_path.iterdir()) == []


# -- model resolution --------------------------------------------------------------------------
def test_resolve_builtin_local_and_unknown(tiny_model_path: Path, tmp_path: Path) -> None:
    assert resolve_model(TINY_MODEL_NAME) == str(tiny_model_path)
    assert resolve_model(str(tiny_model_path)) == str(tiny_model_path)
    with pytest.raises(ValueError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    started = time.monotonic()
    for name in ("no-such-org/no-such-model", "not a model id!", "/no/such/dir", ""):
        with pytest.raises(ValueError, match="unknown model"):
            resolve_model(name)
    assert time.monotonic() - started < 10  # answered from the cache, no network waits


def test_load_model_and_tokenizer(tiny_model_path: Path) -> None:
    model, tok = load_model_and_tokenizer(TINY_MODEL_NAME, device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tok.pad_token_id == PAD_TOKEN_ID


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            pick_device("cuda")

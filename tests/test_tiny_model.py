"""The byte tokenizer, lco-tiny (build, cache, competence) and model resolution."""

from __future__ import annotations

import json
import threading
import time
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
    if "<|" not in text:  # the special tokens' spellings are the one exception to byte ids
        assert ids == list(text.encode("utf-8"))
    assert TOKENIZER.decode(ids) == text


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


def test_tokenizer_saves_and_loads_with_auto_tokenizer(tmp_path: Path) -> None:
    TOKENIZER.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (
        tmp_path / "tokenizer_config.json"
    ).is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "añb 🤗\n"
    assert loaded.encode(text) == TOKENIZER.encode(text)
    assert loaded.decode(loaded.encode(text)) == text
    messages = [{"role": "user", "content": "x"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        TOKENIZER.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")


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


def test_second_ensure_is_a_cache_hit(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "build_tiny_model", no_build)
    assert ensure_tiny_model() == tiny_model_path
    assert ensure_tiny_model(tiny_model_path.parent.parent) == tiny_model_path
    info = json.loads((tiny_model_path / BUILD_INFO_FILE).read_text())
    assert info["version"] == tiny.TINY_MODEL_VERSION and info["final"]["addition_greedy"] > 0


def test_concurrent_ensures_build_once_and_clear_stale_temps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[Path] = []

    def fake_build(out_dir: Path, cfg: Any = None) -> dict[str, Any]:
        builds.append(out_dir)
        time.sleep(0.2)  # long enough for the other threads to queue on the lock
        (out_dir / BUILD_INFO_FILE).write_text("{}")
        return {}

    monkeypatch.setattr(tiny, "build_tiny_model", fake_build)
    models = tmp_path / "models"
    stale = models / f".{tiny.TINY_MODEL_NAME}-{tiny.TINY_MODEL_VERSION}.tmp-dead"
    stale.mkdir(parents=True)
    results: list[Path] = []
    # Separate open()s of the lock file conflict under flock even within one process.
    threads = [
        threading.Thread(target=lambda: results.append(ensure_tiny_model(tmp_path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(set(results)) == 1 and len(results) == 4
    assert results[0].parent == models and (results[0] / BUILD_INFO_FILE).is_file()
    assert not stale.exists() and not builds[0].exists()  # the temp dir was renamed


def test_failed_build_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_build(out_dir: Path, cfg: Any = None) -> dict[str, Any]:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny, "build_tiny_model", broken_build)
    with pytest.raises(RuntimeError):
        ensure_tiny_model(tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{tiny._DIR_NAME}.lock"]


def test_env_var_sets_the_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCO_HOME", str(tmp_path))
    assert tiny.lco_home() == tmp_path


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

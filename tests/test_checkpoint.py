"""Checkpoints: round trip, atomicity, and that damaged or partial dirs are never trusted."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lco_core.checkpoint import (
    MANIFEST,
    TRAIN_STATE,
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    prune_temp_dirs,
    save_checkpoint,
    verify_checkpoint,
)


@pytest.fixture
def model_tok(tiny_model_and_tokenizer: tuple[Any, Any]) -> tuple[Any, Any]:
    return tiny_model_and_tokenizer


def a_train_state(model: Any) -> dict[str, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    return {
        "step": 3,
        "optimizer": opt.state_dict(),
        "summary": {"reward": 0.5, "name": "x", "none": None},
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),  # holds an ndarray: stored as lists
        "scalar": np.float32(1.5),
    }


def save(root: Path, step: int, model_tok: tuple[Any, Any], **state: Any) -> Path:
    model, tok = model_tok
    return save_checkpoint(root, step, model, tok, {"step": step, **state})


def test_round_trip(model_tok: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = model_tok
    state = a_train_state(model)
    path = save_checkpoint(tmp_path, 3, model, tok, state)
    assert path == tmp_path / "step-3"
    assert list_checkpoints(tmp_path) == [path] and latest_checkpoint(tmp_path) == path
    assert verify_checkpoint(path, full=True)
    # Still a plain Hugging Face model dir.
    loaded = AutoModelForCausalLM.from_pretrained(path)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert AutoTokenizer.from_pretrained(path).encode("héllo") == tok.encode("héllo")
    # train_state loads with weights_only=True (load_train_state uses exactly that).
    back = load_train_state(path)
    raw = torch.load(path / TRAIN_STATE, weights_only=True)
    assert back.keys() == raw.keys() == state.keys()
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["python_rng"] == state["python_rng"]
    np_state = back["numpy_rng"]
    restored = (np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:])
    np.random.set_state(restored)  # the list form is enough to restore numpy's RNG
    assert back["scalar"] == 1.5 and back["summary"] == state["summary"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.load_state_dict(back["optimizer"])
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["step"] == 3 and manifest["created_at"]
    assert {"config.json", "model.safetensors", "tokenizer.json", TRAIN_STATE} <= set(
        manifest["files"]
    )


def test_sorted_by_step_number_and_latest(model_tok: tuple[Any, Any], tmp_path: Path) -> None:
    paths = [save(tmp_path, step, model_tok) for step in (10, 2, 9)]
    assert list_checkpoints(tmp_path) == [paths[1], paths[2], paths[0]]
    assert latest_checkpoint(tmp_path) == paths[0]
    assert (
        list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "x") is None
    )


def test_partial_and_foreign_dirs_are_not_listed(
    model_tok: tuple[Any, Any], tmp_path: Path
) -> None:
    good = save(tmp_path, 1, model_tok)
    # A save that died before its rename, one that died before its manifest, and junk.
    (tmp_path / ".tmp-step-2-abc").mkdir()
    (tmp_path / ".tmp-step-2-abc" / "config.json").write_text("{}")
    no_manifest = tmp_path / "step-3"
    no_manifest.mkdir()
    (no_manifest / "config.json").write_text("{}")
    (tmp_path / "step-x").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    assert list_checkpoints(tmp_path) == [good]
    assert latest_checkpoint(tmp_path) == good
    assert prune_temp_dirs(tmp_path) == 1
    assert not (tmp_path / ".tmp-step-2-abc").exists() and good.exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "manifest"])
def test_damaged_checkpoint_is_not_listed(
    model_tok: tuple[Any, Any], tmp_path: Path, damage: str
) -> None:
    older = save(tmp_path, 1, model_tok)
    newer = save(tmp_path, 2, model_tok)
    if damage == "missing":
        (newer / "tokenizer.json").unlink()
    elif damage == "truncated":
        weights = newer / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-10])
    else:
        (newer / MANIFEST).write_text("{not json")
    assert list_checkpoints(tmp_path) == [older]
    assert latest_checkpoint(tmp_path, verify_hashes=False) == older


def test_corrupted_bytes_are_caught_by_hashes(model_tok: tuple[Any, Any], tmp_path: Path) -> None:
    older = save(tmp_path, 1, model_tok)
    newer = save(tmp_path, 2, model_tok)
    weights = newer / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    assert list_checkpoints(tmp_path) == [older, newer]  # sizes alone cannot tell
    assert list_checkpoints(tmp_path, verify_hashes=True) == [older]
    assert not verify_checkpoint(newer) and verify_checkpoint(newer, full=False)
    # What a run resumes from is hash-checked: it falls back to the older checkpoint.
    assert latest_checkpoint(tmp_path) == older


def test_saving_a_step_again_replaces_it(model_tok: tuple[Any, Any], tmp_path: Path) -> None:
    save(tmp_path, 4, model_tok, attempt=1)
    path = save(tmp_path, 4, model_tok, attempt=2)
    assert load_train_state(path)["attempt"] == 2
    assert list_checkpoints(tmp_path) == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-4"]  # no trash left


def test_failed_save_leaves_nothing(
    model_tok: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TypeError, match="weights_only"):
        save(tmp_path, 1, model_tok, bad=object())

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save(tmp_path, 2, model_tok)
    assert list(tmp_path.iterdir()) == []

"""The bundled model `lco-tiny`: a small Qwen2 built and briefly trained on first use.

Nothing can be downloaded here, so the project makes its own model: Qwen2 architecture
(untied embeddings, so vLLM weight sync stays exact), the byte-level ChatML tokenizer of
`lco_core.tokenizer`, trained with plain AdamW on the built-in tasks' supervised examples
until it is *partly* competent (about a third of `addition` right when greedy), which leaves
reinforcement learning room to raise the reward. The build is deterministic (fixed seeds),
takes a minute or two on 2 CPU cores, and is cached:

    path = ensure_tiny_model()        # $LCO_HOME/models/lco-tiny-v2 (default ~/.cache/lco)
    AutoModelForCausalLM.from_pretrained(path); AutoTokenizer.from_pretrained(path)

Concurrent processes build it once (an fcntl lock), into a temp dir renamed into place.
`lco_build.json` in the model dir records the build's steps, time and accuracies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from lco_core.checkpoint import fsync_dir, fsync_tree
from lco_core.hf_engine import HFEngine
from lco_core.rollout import SamplingParams
from lco_core.tasks import Item, get_task
from lco_core.tokenizer import (
    IM_END_ID,
    PAD_TOKEN_ID,
    VOCAB_SIZE,
    build_byte_tokenizer,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "lco-tiny"
# Bump when the recipe changes: a new version builds into a new cache dir.
TINY_MODEL_VERSION = "v2"
BUILD_INFO_FILE = "lco_build.json"
_DIR_NAME = f"{TINY_MODEL_NAME}-{TINY_MODEL_VERSION}"


@dataclass(frozen=True)
class TinyBuildConfig:
    """The recipe. Two layers: half the compute per step of four, and enough for the
    partial competence that is all the model is for."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, as real Qwen2 checkpoints have
    max_position_embeddings: int = 512
    seed: int = 0
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    max_steps: int = 2000
    # Relative share of each training batch per task while the task is below its target.
    mix: dict[str, float] = field(default_factory=lambda: {"addition": 0.7, "reverse": 0.3})
    # A task that reaches this greedy accuracy on held-out items drops to `done_weight` of
    # its share (enough not to forget it, too little to learn much more); the build ends
    # when every task has. Stopping on measured accuracy (not a step count) lands in the
    # "partly competent" band even where float rounding moves the sudden jumps in accuracy
    # these tiny models show by a few hundred steps.
    target_accuracy: float = 0.3
    done_weight: float = 0.1
    eval_every: int = 50
    eval_items: int = 64
    eval_seed: int = 10_001
    data_seed: int = 1_000


def lco_home() -> Path:
    """`$LCO_HOME`, default `~/.cache/lco`: where built models are cached."""
    return Path(os.environ.get("LCO_HOME") or Path.home() / ".cache" / "lco").expanduser()


def ensure_tiny_model(home: Path | None = None) -> Path:
    """The directory of lco-tiny, building it first if it is not cached yet."""
    models = (home or lco_home()) / "models"
    final = models / _DIR_NAME
    if _is_complete(final):
        return final
    models.mkdir(parents=True, exist_ok=True)
    with (models / f".{_DIR_NAME}.lock").open("w") as lock:
        # Blocks while another process builds; it then finds the finished model below.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_complete(final):
                return final
            # Leftovers of a build that died: safe to remove, as builders hold this lock.
            for stale in models.glob(f".{_DIR_NAME}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # incomplete (no build record): never ours to trust
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{_DIR_NAME}.tmp-", dir=models))
            log.info("tiny_model.building", extra={"path": str(final)})
            try:
                build_tiny_model(tmp)
                # mkdtemp makes it private (0700); the cache is shared by whoever runs jobs.
                os.chmod(tmp, 0o755)
                for file in tmp.iterdir():
                    os.chmod(file, 0o644)
                fsync_tree(tmp)
                os.rename(tmp, final)
                fsync_dir(models)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _is_complete(path: Path) -> bool:
    return (path / BUILD_INFO_FILE).is_file()


def tiny_config(cfg: TinyBuildConfig | None = None) -> Qwen2Config:
    cfg = cfg or TinyBuildConfig()
    return Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=IM_END_ID,
        pad_token_id=PAD_TOKEN_ID,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        dtype="float32",
    )


def build_tiny_model(out_dir: Path, cfg: TinyBuildConfig | None = None) -> dict[str, Any]:
    """Create, train and save lco-tiny into `out_dir`; returns the build record."""
    cfg = cfg or TinyBuildConfig()
    started = time.monotonic()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    try:
        # Fork the RNG: a build inside a test or a trainer must not move the caller's stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            tokenizer = build_byte_tokenizer()
            model = Qwen2ForCausalLM(tiny_config(cfg))
            model.generation_config = GenerationConfig(
                eos_token_id=IM_END_ID, pad_token_id=PAD_TOKEN_ID
            )
            info = _train(model, tokenizer, cfg)
    finally:
        torch.set_num_threads(threads_before)
    info["build_seconds"] = round(time.monotonic() - started, 1)
    info["recipe"] = asdict(cfg)
    info["version"] = TINY_MODEL_VERSION
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # Written last: its presence marks a complete model dir.
    (out_dir / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    log.info("tiny_model.built", extra={"path": str(out_dir), **info["final"]})
    return info


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the chat prompt for `messages`, ending with the assistant header."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(str(text), add_special_tokens=False))


@dataclass(frozen=True)
class TaskScore:
    accuracy: float  # exact match with the item's answer (what the task's grader checks)
    stop_rate: float  # share of completions that ended with eos rather than max_tokens


def task_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    max_tokens: int = 16,
) -> TaskScore:
    """Score reinforcement `items` (with an `answer`) by one completion each."""
    engine = HFEngine(model, tokenizer)
    prompts = [prompt_ids(tokenizer, item["messages"]) for item in items]
    params = SamplingParams(
        n=1, temperature=temperature, max_tokens=max_tokens, seed=seed, greedy=greedy
    )
    outs = engine.generate(prompts, params)
    right = sum(o[0].text == item["answer"] for o, item in zip(outs, items, strict=True))
    stopped = sum(o[0].finish_reason == "stop" for o in outs)
    return TaskScore(accuracy=right / len(items), stop_rate=stopped / len(items))


def _encode_sft(tokenizer: PreTrainedTokenizerBase, item: Item) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids): the assistant reply plus `<|im_end|>`, the only tokens with loss."""
    user, reply = item["messages"][0], item["messages"][1]
    target = [*tokenizer.encode(reply["content"], add_special_tokens=False), IM_END_ID]
    return prompt_ids(tokenizer, [user]), target


def _train(
    model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerBase, cfg: TinyBuildConfig
) -> dict[str, Any]:
    names = list(cfg.mix)
    n_max = cfg.max_steps * cfg.batch_size
    pools = {n: get_task(n).sft_examples(n_max, seed=cfg.data_seed) for n in names}
    cursor = dict.fromkeys(names, 0)
    evals = {n: get_task(n).examples(cfg.eval_items, seed=cfg.eval_seed) for n in names}
    active = set(names)
    share = dict(cfg.mix)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    reached: dict[str, int] = {}
    history: list[dict[str, Any]] = []
    step = 0
    model.train()
    while active and step < cfg.max_steps:
        # Warmup, then cosine decay over the step budget.
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / cfg.max_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        live = sorted(active)
        batch = []
        for name in rng.choices(names, weights=[share[n] for n in names], k=cfg.batch_size):
            batch.append(_encode_sft(tokenizer, pools[name][cursor[name]]))
            cursor[name] += 1
        loss = _sft_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.eval_every == 0:
            scores = {n: task_accuracy(model, tokenizer, evals[n]).accuracy for n in live}
            model.train()
            history.append({"step": step, "loss": round(loss.item(), 4), **scores})
            log.info("tiny_model.progress", extra=history[-1])
            for name, acc in scores.items():
                if acc >= cfg.target_accuracy:
                    active.discard(name)
                    share[name] = cfg.mix[name] * cfg.done_weight
                    reached[name] = step
    model.eval()
    # Report on items the stopping rule never looked at.
    final: dict[str, float] = {}
    for name in names:
        items = get_task(name).examples(200, seed=cfg.eval_seed + 1)
        greedy = task_accuracy(model, tokenizer, items)
        sampled = task_accuracy(model, tokenizer, items, greedy=False, seed=1)
        final[f"{name}_greedy"] = greedy.accuracy
        final[f"{name}_sampled"] = sampled.accuracy
        final[f"{name}_stop_rate"] = min(greedy.stop_rate, sampled.stop_rate)
    return {"steps": step, "target_reached_at": reached, "history": history, "final": final}


def _sft_loss(model: Qwen2ForCausalLM, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    width = max(len(p) + len(t) for p, t in batch)
    # Right padding without an attention mask: pads sit after every real token, so the
    # causal mask already hides them, and their labels are ignored.
    ids = torch.full((len(batch), width), PAD_TOKEN_ID, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (prompt, target) in enumerate(batch):
        seq = prompt + target
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(prompt) : len(seq)] = torch.tensor(target)
    loss: torch.Tensor = model(input_ids=ids, labels=labels).loss
    return loss

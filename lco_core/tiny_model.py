"""The bundled model `lco-tiny`: a small Qwen2, shipped built and checked by sha256.

Nothing can be downloaded here, so the project makes its own model: Qwen2 architecture
(untied embeddings, so vLLM weight sync stays exact), the byte-level ChatML tokenizer of
`lco_core.tokenizer`, trained with plain AdamW on the built-in tasks' supervised examples
until it is *partly* competent (about a third of `addition` right when greedy), which leaves
reinforcement learning room to raise the reward.

The trained model ships with the package (`lco_core/assets/lco-tiny-v3/`, 2.2 MB) and every
load checks its files against the sha256 digests pinned below, so every machine trains the
same model and the first use takes milliseconds. The recipe cannot give that: training in
float32 rounds differently on each set of CPU kernels (AVX-512, AVX2, NEON), and a few
thousand steps turn those last bits into a different model, with different accuracies and a
different build time. The recipe stays as the documented way to regenerate the asset:

    path = ensure_tiny_model()        # the shipped dir, verified
    AutoModelForCausalLM.from_pretrained(path); AutoTokenizer.from_pretrained(path)

    python -m lco_core.tiny_model --out DIR   # rebuild from the recipe, print the digests

`lco_build.json` in the model dir records the build's steps, time, accuracies and machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

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
# Bump when the recipe or the tokenizer changes, and ship the rebuilt dir under the new name.
TINY_MODEL_VERSION = "v3"
BUILD_INFO_FILE = "lco_build.json"
TINY_MODEL_DIR = (
    Path(__file__).resolve().parent / "assets" / f"{TINY_MODEL_NAME}-{TINY_MODEL_VERSION}"
)
# The shipped files and their digests: `python -m lco_core.tiny_model --out DIR` prints them.
TINY_MODEL_SHA256: dict[str, str] = {
    "chat_template.jinja": "66edfb854931c933d3ac94f507626dd4fa2d5ca0a9b1036b11729d296a7392ac",
    "config.json": "f251c4ea0a592f7aa527f8cd8ad01df1d4442ea9aa323ed64de5b3df2f95dadf",
    "generation_config.json": "cc80a4a13f6cadd8374f55db43a38578b01bbd8b24c562edbc5c5ebcc100d6c0",
    "lco_build.json": "17de8d10f0e0507670b8f7688f1f5104e596ba212745b121caba9228f594113a",
    "model.safetensors": "a689a279abcc6d2160fac08714a8b54042ccc0f91ac1d2865772a55ebf24a743",
    "tokenizer.json": "b0349d87fe8df21e5d7fdb58653a8a0353abdca0eb0f9d3aaf28bd0c835341dd",
    "tokenizer_config.json": "301f502020f0aa063f90eb55041f3a781d1f0d57537e4c5afcad53b0b527fcc3",
}


class TinyModelError(RuntimeError):
    """The shipped lco-tiny is missing or does not match its pinned digests."""


def file_digests(model_dir: Path) -> dict[str, str]:
    """sha256 (hex) of every file in `model_dir`, by file name."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(model_dir.iterdir())
        if f.is_file()
    }


def verify_tiny_model(model_dir: Path = TINY_MODEL_DIR) -> Path:
    """`model_dir` if it holds exactly the pinned lco-tiny files; `TinyModelError` if not."""
    if not model_dir.is_dir():
        raise TinyModelError(
            f"lco-tiny is missing: {model_dir} does not exist (reinstall the package)"
        )
    found = file_digests(model_dir)
    if found != TINY_MODEL_SHA256:
        wrong = sorted(
            name
            for name in TINY_MODEL_SHA256.keys() | found.keys()
            if found.get(name) != TINY_MODEL_SHA256.get(name)
        )
        raise TinyModelError(
            f"lco-tiny at {model_dir} does not match its pinned sha256 digests "
            f"({', '.join(wrong)} differ or are missing/extra); reinstall the package"
        )
    return model_dir


def ensure_tiny_model() -> Path:
    """The directory of lco-tiny (the shipped one), after checking its digests."""
    return verify_tiny_model(TINY_MODEL_DIR)


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
    max_steps: int = 4000
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


def build_tiny_model(
    out_dir: Path,
    cfg: TinyBuildConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Create, train and save lco-tiny into `out_dir`; returns the build record.

    `progress(step, max_steps)` is called after every training step (the build stops early,
    before `max_steps`, once every task reaches its target accuracy)."""
    cfg = cfg or TinyBuildConfig()
    started = time.monotonic()
    threads_before = torch.get_num_threads()
    # One thread: the same kernels give the same bits on every run (a multi-threaded
    # reduction may split differently), and on a shared machine two threads spent most of
    # their time waiting on each other (a build took over an hour; one thread: 7 minutes).
    torch.set_num_threads(1)
    try:
        # Fork the RNG: a build inside a test or a trainer must not move the caller's stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            tokenizer = build_byte_tokenizer()
            model = Qwen2ForCausalLM(tiny_config(cfg))
            model.generation_config = GenerationConfig(
                eos_token_id=IM_END_ID, pad_token_id=PAD_TOKEN_ID
            )
            info = _train(model, tokenizer, cfg, progress)
    finally:
        torch.set_num_threads(threads_before)
    info["build_seconds"] = round(time.monotonic() - started, 1)
    info["recipe"] = asdict(cfg)
    info["version"] = TINY_MODEL_VERSION
    info["machine"] = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": platform.machine(),
        "threads": 1,
    }
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
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TinyBuildConfig,
    progress: Callable[[int, int], None] | None = None,
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
        if progress is not None:
            progress(step, cfg.max_steps)
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


def main(argv: list[str] | None = None) -> int:
    """Rebuild lco-tiny from the recipe into `--out` and print the digests to pin."""
    parser = argparse.ArgumentParser(
        prog="python -m lco_core.tiny_model",
        description="Rebuild lco-tiny from its recipe (a few minutes on 2 CPU cores).",
    )
    parser.add_argument("--out", type=Path, required=True, help="an empty or new directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    from tqdm import tqdm

    cfg = TinyBuildConfig()
    print(
        f"building lco-tiny {TINY_MODEL_VERSION} from its recipe into {args.out}", file=sys.stderr
    )
    with tqdm(total=cfg.max_steps, unit="step", file=sys.stderr) as bar:

        def show(step: int, total: int) -> None:
            bar.update(step - bar.n)

        info = build_tiny_model(args.out, cfg, progress=show)
    print(json.dumps(info["final"], indent=2))
    print(f"steps: {info['steps']}, {info['build_seconds']} s; sha256 to pin:")
    print(json.dumps(file_digests(args.out), indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())

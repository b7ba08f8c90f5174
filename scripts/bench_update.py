"""Benchmark: one policy-update step of lco_kld vs grpo vs ppo_clip on the same batch.

    .venv/bin/python scripts/bench_update.py            # CPU, ~25M-parameter model
    .venv/bin/python scripts/bench_update.py --device cuda --vocab 151936 --hidden 896

Runs the trainer's real `RLTrainer.update` (trunk forward, chunked loss, backward, AdamW
step) on a random Qwen2 model with a realistic vocabulary, each loss in a fresh process so
peak memory is measured cleanly: CUDA's allocator peak on GPU; on CPU, the peak resident
set size above the process's baseline, sampled every millisecond during the first update.
Time is the median of the following updates. Prints a table and the LCO/GRPO ratios
(target: both <= 1.10).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

LOSSES = {"lco_kld": "lco", "grpo": "grpo", "ppo_clip": "ppo"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples the resident set size in a thread; `peak` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lco_core.callbacks import Callbacks
    from lco_core.policy_update import policy_update
    from lco_core.rl import RLTrainer, Rollouts
    from lco_core.tokenizer import build_byte_tokenizer
    from lco_spec.train_config import TrainConfig

    torch.manual_seed(0)
    device = torch.device(args.device)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128),
        intermediate_size=args.hidden * 4,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(
        kind="rl",
        model="bench",
        seed=0,
        learning_rate=1e-5,
        batch_size=args.seqs,
        total_steps=10,
        n_epochs=1,
        lr_schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=None,
        checkpoint_interval=10,
        eval_interval=10,
        eval_samples=0,
        max_seq_len=4096,
        dtype="bfloat16" if device.type == "cuda" else "float32",
        algorithm=LOSSES[args.loss],
        loss=args.loss,
        n_samples=1,
        max_completion_tokens=args.response,
        advantage="gae" if args.loss == "ppo_clip" else "raw",
        loss_chunk_size=args.chunk,
        split_grad_norm=False,
    )
    grader = {
        "type": "string_check",
        "name": "x",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
    trainer = RLTrainer(
        cfg,
        model,
        build_byte_tokenizer(),
        # One item: the trainer sizes its micro-batches from the longest prompt.
        items=[{"messages": [{"role": "user", "content": "x" * args.prompt}], "answer": "1"}],
        eval_items=[],
        grader_spec=grader,
        engine=None,
        ref_model=None,
        output_dir=Path("/tmp"),  # type: ignore[arg-type]
        callbacks=Callbacks(),
        device=device,
    )
    g = torch.Generator().manual_seed(1)
    s, p, r = args.seqs, args.prompt, args.response
    lengths = torch.full((s,), r)
    ro = Rollouts(
        input_ids=torch.randint(0, args.vocab, (s, p + r), generator=g),
        attention_mask=torch.ones(s, p + r, dtype=torch.long),
        prompt_lens=torch.full((s,), p),
        lengths=lengths,
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)]),
        tokens=torch.empty(0, dtype=torch.long),
        engine_logprobs=torch.empty(0),
    )
    ro.tokens = ro.input_ids[:, p:].reshape(-1)
    ro.engine_logprobs = torch.zeros(len(ro.tokens))
    rewards = (torch.rand(s, generator=g) > 0.5).float() * 2 - 1
    old = trainer.token_logprobs(model, ro, full=True)
    adv, returns = trainer.advantages(ro, rewards, old.get("values"))
    if returns is None and cfg.algorithm == "ppo":
        raise RuntimeError("ppo needs returns")

    def update() -> None:
        policy_update(trainer, ro, old, adv, returns, None, split=False)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        update()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        base = rss_mb()
        with PeakRSS() as sampler:
            update()
        peak = sampler.peak - base
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)
    return {
        "loss": args.loss,
        "params_m": n_params / 1e6,
        "tokens": int(lengths.sum()),
        "seconds": statistics.median(times),
        "peak_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seqs", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--response", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loss", choices=sorted(LOSSES))
    args = parser.parse_args()
    if args.loss:
        print(json.dumps(child(args)))
        return
    rows = {}
    for loss in LOSSES:
        cmd = [sys.executable, __file__, "--loss", loss] + [
            f"--{k}={v}" for k, v in vars(args).items() if k != "loss" and v is not None
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{loss} failed:\n{proc.stderr}")
        rows[loss] = json.loads(proc.stdout.strip().splitlines()[-1])
    first = next(iter(rows.values()))
    print(
        f"model {first['params_m']:.1f}M params, vocab {args.vocab}, {first['tokens']} response tokens, "
        f"chunk {args.chunk}, device {args.device}"
    )
    print(f"{'loss':<10} {'update s':>9} {'peak MB':>9}")
    for loss, row in rows.items():
        print(f"{loss:<10} {row['seconds']:>9.3f} {row['peak_mb']:>9.1f}")
    lco, grpo = rows["lco_kld"], rows["grpo"]
    print(
        f"LCO/GRPO time ratio {lco['seconds'] / grpo['seconds']:.3f}, "
        f"peak-memory ratio {lco['peak_mb'] / grpo['peak_mb']:.3f} (target <= 1.10 each)"
    )


if __name__ == "__main__":
    main()

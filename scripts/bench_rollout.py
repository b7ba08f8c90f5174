"""Rollout throughput, vLLM vs transformers `generate`, and the cost of a weight sync.

    python scripts/bench_rollout.py                       # ~25M-param Qwen2, CPU, ~3 min
    python scripts/bench_rollout.py --hidden 896 --layers 24 --vocab 151936   # ~0.5B (GPU)

Builds a random-init Qwen2 (tied embeddings by default, like small Qwen2 checkpoints) over
the byte tokenizer (ids past its 259 tokens decode to nothing, which is fine here), samples
`--n` completions of `--max-tokens` for `--prompts` prompts of varied length with both
engines, then times RL-like steps with vLLM: rollout, one AdamW update on the rollouts,
weight sync (write + reload + verification probe). Prints one table.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from lco_core.hf_engine import HFEngine
from lco_core.rollout import Completion, SamplingParams
from lco_core.tokenizer import IM_END_ID, PAD_TOKEN_ID, build_byte_tokenizer


def build_model(args: argparse.Namespace) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or 3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,  # head size 64: supported by vLLM's CPU kernels
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=1024,
        tie_word_embeddings=not args.untied,
        eos_token_id=IM_END_ID,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).float().to(args.device)
    model.generation_config.eos_token_id = IM_END_ID
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model.eval()


def make_prompts(args: argparse.Namespace) -> list[list[int]]:
    """Lengths spread evenly over [min_prompt, max_prompt], random byte ids (never EOS)."""
    gen = torch.Generator().manual_seed(1)
    count = args.prompts
    lengths = [
        args.min_prompt + (args.max_prompt - args.min_prompt) * i // max(count - 1, 1)
        for i in range(count)
    ]
    return [torch.randint(32, 127, (n,), generator=gen).tolist() for n in lengths]


def timed_rollout(
    engine: Any, prompts: list[list[int]], params: SamplingParams
) -> tuple[float, int, list[list[Completion]]]:
    started = time.perf_counter()
    groups = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    return seconds, sum(len(c.token_ids) for g in groups for c in g), groups


def update_step(
    model: Any, opt: torch.optim.Optimizer, prompts: list[list[int]], groups: list[list[Completion]]
) -> float:
    """One AdamW step of next-token loss on the rolled-out sequences (the shape of an RL
    update: one forward and backward over every prompt + completion)."""
    started = time.perf_counter()
    seqs = [p + c.token_ids for p, g in zip(prompts, groups, strict=True) for c in g]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    model.train()
    opt.zero_grad()
    for start in range(0, len(seqs), 16):  # micro-batches bound activation memory
        batch = ids[start : start + 16].to(model.device)
        attn = mask[start : start + 16].to(model.device)
        labels = batch.masked_fill(attn == 0, -100)
        loss = model(input_ids=batch, attention_mask=attn, labels=labels).loss
        loss.backward()
    opt.step()
    model.eval()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--intermediate", type=int, default=0, help="default 3 x hidden")
    parser.add_argument("--untied", action="store_true", help="separate LM head")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--min-prompt", type=int, default=8)
    parser.add_argument("--max-prompt", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed RL-like steps with vLLM")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--hf-threads",
        type=int,
        default=0,
        help="torch threads for HF generate (default: torch's). vLLM's CPU worker runs one "
        "thread and reserves a core for its scheduler; on a busy 2-core machine 2 threads "
        "make HF's small matmuls wait on each other (measured 3-25x slower decode steps)",
    )
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    model = build_model(args)
    tokenizer = build_byte_tokenizer()
    prompts = make_prompts(args)
    n_params = sum(p.numel() for p in model.parameters())
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0)
    warm = SamplingParams(n=1, max_tokens=8, seed=0)
    rows: list[tuple[str, str]] = [
        (
            "model",
            f"Qwen2 {n_params / 1e6:.1f}M params, vocab {args.vocab}, "
            f"{args.layers}x{args.hidden}, {'untied' if args.untied else 'tied'}",
        ),
        ("device", f"{args.device}, torch threads {torch.get_num_threads()}"),
        (
            "rollout batch",
            f"{len(prompts)} prompts ({args.min_prompt}-{args.max_prompt} tokens) "
            f"x n={args.n}, {args.max_tokens} new tokens",
        ),
    ]

    hf_tps = float("nan")
    if not args.skip_hf:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.hf_threads or threads)
        hf = HFEngine(model, tokenizer)
        hf.generate(prompts[:2], warm)
        seconds, tokens, _ = timed_rollout(hf, prompts, params)
        hf_tps = tokens / seconds
        rows.append(
            (
                "HF generate",
                f"{tokens} tokens in {seconds:.1f} s = {hf_tps:,.0f} tokens/s "
                f"({torch.get_num_threads()} threads)",
            )
        )
        torch.set_num_threads(threads)

    from lco_core.vllm_engine import VLLMEngine

    started = time.perf_counter()
    engine = VLLMEngine.from_model(model, tokenizer, seed=0, max_model_len=1024)
    rows.append(("vLLM start", f"{time.perf_counter() - started:.1f} s"))
    try:
        started = time.perf_counter()
        engine.generate(prompts[:2], warm)
        rows.append(("vLLM first generate", f"{time.perf_counter() - started:.1f} s (warm-up)"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step_rows: list[tuple[float, int, float, float]] = []
        for step in range(args.steps):
            step_params = SamplingParams(n=args.n, max_tokens=args.max_tokens, seed=step)
            rollout_s, tokens, groups = timed_rollout(engine, prompts, step_params)
            update_s = update_step(model, opt, prompts, groups)
            started = time.perf_counter()
            engine.sync_weights(model)
            sync_s = time.perf_counter() - started
            step_rows.append((rollout_s, tokens, update_s, sync_s))
            assert engine.last_sync is not None
            last = engine.last_sync
            rows.append(
                (
                    f"vLLM step {step + 1}",
                    f"rollout {rollout_s:.1f} s ({tokens / rollout_s:,.0f} tokens/s), "
                    f"update {update_s:.1f} s, sync {sync_s:.2f} s (write {last.write_s:.2f}"
                    f" + reload {last.load_s:.2f} + probe {last.verify_s:.2f}; "
                    f"probe |dlogp| {last.probe_max_abs_diff:.1e})",
                )
            )
    finally:
        engine.close()
    rollout_s = sum(r[0] for r in step_rows)
    tokens = sum(r[1] for r in step_rows)
    vllm_tps = tokens / rollout_s
    sync_s = sum(r[3] for r in step_rows) / len(step_rows)
    step_s = sum(r[0] + r[2] + r[3] for r in step_rows) / len(step_rows)
    rows += [
        ("vLLM rollout", f"{vllm_tps:,.0f} tokens/s (mean over {len(step_rows)} steps)"),
        ("vLLM / HF", f"{vllm_tps / hf_tps:.2f}x"),
        ("weight sync", f"{sync_s:.2f} s = {100 * sync_s / step_s:.1f}% of a {step_s:.1f} s step"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":  # vLLM starts worker processes: keep module import side-effect free
    main()

"""How hard reasoning-gym settings are for a model: greedy and sampled reward, to pick a task
that RL can improve (greedy reward well above 0 and below 1, samples that disagree).

    .venv/bin/python scripts/rg_difficulty.py                 # SmolLM2-135M-Instruct, SETTINGS
    .venv/bin/python scripts/rg_difficulty.py --only arith-small --prompts 16

For each setting it exports `--prompts` held-out (validation) items with
`lco_core.rg_tasks.export_rg`, renders them with the model's chat template (its default
system prompt), as training does, and generates with the HF engine, up to `--max-tokens`
each: greedy for every prompt, then `--samples` per prompt at temperature 1 for the first
`--sampled-prompts`. The same completions are graded with both answer extractions. It prints
a markdown table: greedy reward and the share of greedy answers scored 1, sampled reward, the
share of prompts whose samples do not all score the same (the groups that give group-relative
advantages a signal) and the mean within-group standard deviation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

TWO_TERMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
PLUS_MINUS = {"operators": ["+", "-"], "allow_parentheses": False, "allow_negation": False}

# label -> (dataset, config, instruction); the preset "small" is arith-small+result.
SETTINGS: dict[str, tuple[str, dict[str, Any] | None, str | None]] = {
    "arith-default": ("basic_arithmetic", None, None),
    "arith-small": ("basic_arithmetic", {**TWO_TERMS, **PLUS_MINUS}, None),
    "arith-small+number": (
        "basic_arithmetic",
        {**TWO_TERMS, **PLUS_MINUS},
        "Answer with the number only.",
    ),
    "arith-small+result": (
        "basic_arithmetic",
        {**TWO_TERMS, **PLUS_MINUS},
        "Respond with just the result.",
    ),
    "arith-1digit+result": (
        "basic_arithmetic",
        {**TWO_TERMS, **PLUS_MINUS, "max_digits": 1},
        "Respond with just the result.",
    ),
    "letters-1-2w+number": (
        "letter_counting",
        {"min_words": 1, "max_words": 2},
        "Answer with the number only.",
    ),
    "letters-2-3w+number": (
        "letter_counting",
        {"min_words": 2, "max_words": 3},
        "Answer with the number only.",
    ),
    "letters-3-5w+number": (
        "letter_counting",
        {"min_words": 3, "max_words": 5},
        "Answer with the number only.",
    ),
    "backward-3-5+word": (
        "spell_backward",
        {"min_word_len": 3, "max_word_len": 5},
        "Answer with the reversed word only.",
    ),
}


def measure(engine: Any, tokenizer: Any, label: str, args: Any) -> list[dict[str, Any]]:
    """One table row per answer extraction for SETTINGS[label]."""
    from lco_core.data import encode_prompt
    from lco_core.rg_tasks import export_rg
    from lco_core.rollout import SamplingParams
    from lco_spec.graders import build_grader

    dataset, config, instruction = SETTINGS[label]
    _, items, _, _, spec = export_rg(dataset, 1, args.prompts, args.seed, config, instruction)
    prompts = [encode_prompt(tokenizer, item["messages"]) for item in items]
    start = time.perf_counter()
    greedy = engine.generate(prompts, SamplingParams(max_tokens=args.max_tokens, greedy=True))
    sampled = engine.generate(
        prompts[: args.sampled_prompts],
        SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens, seed=0),
    )
    seconds = time.perf_counter() - start
    rows = []
    for extract in ("answer_tag", "last_number"):
        grader = build_grader({**spec, "extract": extract})
        best = [grader.grade(g[0].text, item).score for g, item in zip(greedy, items, strict=True)]
        groups = [
            [grader.grade(c.text, item).score for c in group]
            for group, item in zip(sampled, items, strict=False)
        ]
        rows.append(
            {
                "setting": label,
                "extract": extract,
                "greedy": statistics.mean(best),
                "exact": statistics.mean(float(s == 1.0) for s in best),
                "sampled": statistics.mean(s for g in groups for s in g),
                "varied": statistics.mean(float(len(set(g)) > 1) for g in groups),
                "group_std": statistics.mean(statistics.pstdev(g) for g in groups),
                "seconds": seconds,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an HF model dir (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--only", help="comma-separated labels of SETTINGS (default: all)")
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts, greedy")
    parser.add_argument("--sampled-prompts", type=int, default=16, help="of those, sampled")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt (temp 1)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="the export's seed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from lco_core.hf_engine import HFEngine
    from lco_core.models import load_model_and_tokenizer

    if not args.model:
        from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

        args.model = str(import_cached(packaged_gguf(), REPO / ".cache" / "models", SMOLLM2_NAME))
    model, tokenizer = load_model_and_tokenizer(args.model)
    engine = HFEngine(model, tokenizer)
    print(
        f"{Path(args.model).name}: greedy on {args.prompts} held-out prompts, "
        f"{args.samples} samples at temperature 1 on {args.sampled_prompts} of them, "
        f"<= {args.max_tokens} new tokens\n"
    )
    print("| setting | extract | greedy | greedy = 1 | sampled | groups varied | group std | s |")
    print("|---|---|---|---|---|---|---|---|")
    for label in args.only.split(",") if args.only else SETTINGS:
        for r in measure(engine, tokenizer, label, args):
            print(
                f"| {r['setting']} | {r['extract']} | {r['greedy']:.3f} | {r['exact']:.2f} | "
                f"{r['sampled']:.3f} | {r['varied']:.2f} | {r['group_std']:.3f} | "
                f"{r['seconds']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Commands that run here, without the service: local training, the built-in tasks'
datasets, and the stability study.

    lco train --config job.yaml --output DIR          train locally (lco_core.cli_train)
    lco tasks list [--json]                           built-in tasks and reasoning-gym datasets
    lco tasks export NAME --out DIR                   write a built-in task's datasets
    lco tasks export rg:DATASET --size N --seed S --out DIR   the same from reasoning-gym
                     [--config JSON --instruction TEXT --extract last_number | --preset NAME]
    lco experiment stability [--preset quick]         LCO vs baselines: report and plots

Each imports torch (through lco_core) only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.options import JSON


def cmd_train(argv: list[str]) -> int:
    from lco_core.cli_train import main as train_main

    return train_main(argv)


RG_PREFIX = "rg:"


def _rg_setting(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """`export_rg`'s config, instruction and extract: the preset's, or the options'."""
    from lco_core.rg_tasks import preset

    chosen = {"config": args.config, "instruction": args.instruction, "extract": args.extract}
    if args.preset:
        if any(value is not None for value in chosen.values()):
            raise ValueError("--preset sets the config, instruction and extract: give none")
        return preset(dataset, args.preset)
    if args.config is None:
        return chosen
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(
            "--config must be a JSON object of the dataset's config fields, "
            """e.g. '{"min_terms": 2}'"""
        )
    return chosen | {"config": config}


def cmd_tasks_export(args: argparse.Namespace) -> int:
    from lco_core.tasks import get_task, split_examples, write_jsonl

    out = Path(args.out)
    files: dict[str, list[dict[str, Any]] | None]
    try:
        if args.name.startswith(RG_PREFIX):
            from lco_core.rg_tasks import export_rg

            dataset = args.name.removeprefix(RG_PREFIX)
            setting = _rg_setting(args, dataset)
            train, val, sft_train, sft_val, grader = export_rg(
                dataset, args.n_train, args.n_val, args.seed, **setting
            )
            files = {"sft_train.jsonl": sft_train, "sft_val.jsonl": sft_val}
            config = setting["config"]
            described = f"config {json.dumps(config)}" if config else "default config"
            if args.preset:
                described = f"preset {args.preset}: {described}"
            title = f"{args.name}: reasoning-gym's {dataset} ({described}, seed {args.seed})"
        else:
            rg_only = (args.config, args.instruction, args.extract, args.preset)
            if any(value is not None for value in rg_only):
                raise ValueError("--config, --instruction, --extract and --preset are for rg:")
            try:
                task = get_task(args.name)
            except ValueError as exc:
                raise ValueError(
                    f"{exc}; or rg:DATASET for a reasoning-gym dataset (`lco tasks list`)"
                ) from None
            train, val = split_examples(task, args.n_train, args.n_val, seed=args.seed)
            files = dict(
                zip(
                    ("sft_train.jsonl", "sft_val.jsonl"),
                    split_examples(task, args.n_train, args.n_val, seed=args.seed, supervised=True),
                    strict=True,
                )
            )
            grader, title = task.grader(), f"{task.name}: {task.description}"
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files |= {"rl_train.jsonl": train, "rl_val.jsonl": val}
    out.mkdir(parents=True, exist_ok=True)
    print(f"{title}: {len(train)} train, {len(val)} validation items")
    for name, items in files.items():
        if items is None:
            # A file left by an earlier export would not match the new RL items.
            (out / name).unlink(missing_ok=True)
            print(f"  (no {name}: the dataset has no single answer to train on)")
        else:
            print(f"  {write_jsonl(items, out / name)}")
    (out / "grader.json").write_text(json.dumps(grader, indent=2) + "\n")
    print(f"  {out / 'grader.json'}")
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from lco_core.tasks import list_tasks
    from lco_spec.graders import reasoning_gym_datasets

    tasks = [{"name": task.name, "description": task.description} for task in list_tasks()]
    datasets: list[dict[str, Any]] = []
    missing: str | None = None  # why there are no reasoning-gym datasets
    try:
        names = reasoning_gym_datasets()
    except ValueError as exc:
        missing = str(exc)
    else:
        from reasoning_gym.factory import DATASETS

        from lco_core.rg_tasks import PRESETS

        # reasoning_gym.<category>.<module>: the category groups similar tasks.
        datasets = [
            {
                "name": RG_PREFIX + name,
                "category": DATASETS[name][0].__module__.split(".")[1],
                "presets": list(PRESETS.get(name, ())),
            }
            for name in names
        ]
    if args.json:
        print(json.dumps({"tasks": tasks, "reasoning_gym": datasets}, indent=2))
        return 0
    print("built-in tasks (lco tasks export NAME --out DIR):")
    for task in tasks:
        print(f"  {task['name']:<28}{task['description']}")
    if missing is not None:
        print(f"reasoning-gym datasets: none ({missing})")
        return 0
    print("reasoning-gym datasets (lco tasks export rg:NAME --size N --out DIR):")
    for dataset in datasets:
        presets = f" (--preset {', '.join(dataset['presets'])})" if dataset["presets"] else ""
        print(f"  {dataset['name']:<28}{dataset['category']}{presets}")
    return 0


def cmd_experiment_stability(args: argparse.Namespace) -> int:
    from lco_core.experiments.report import write_report
    from lco_core.experiments.stability import preset, run_study

    cfg = preset(args.preset, steps=args.steps, seeds=tuple(args.seeds) if args.seeds else None)
    # The report quotes the command that makes it, every option spelled out.
    command = (
        f"lco experiment stability --preset {args.preset} --work {args.work} --out {args.out}"
        + (f" --steps {args.steps}" if args.steps else "")
        + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
        + (f" --workers {args.workers}" if args.workers != 1 else "")
        + (" --fresh" if args.fresh else "")
        + (" --report-only" if args.report_only else "")
    )

    def progress(name: str, record: dict[str, Any], done: int, total: int) -> None:
        print(
            f"[{done}/{total}] {name}: {record['wall_s']:.0f} s, greedy reward "
            f"{record.get('initial_eval_reward', float('nan')):.3f} -> "
            f"{record.get('final_eval_reward', float('nan')):.3f}",
            flush=True,
        )

    result = run_study(
        cfg,
        Path(args.work),
        workers=args.workers,
        fresh=args.fresh,
        train=not args.report_only,
        on_run=progress,
    )
    for path in write_report(result, out_dir=Path(args.out), command=command):
        print(f"wrote {path}")
    return 0


def add_parsers(sub: Any) -> None:
    """`tasks ...`, `experiment ...` and `train`, on the top-level subparsers."""
    tasks = sub.add_parser("tasks", help="built-in and reasoning-gym tasks").add_subparsers(
        dest="action", required=True
    )
    p = tasks.add_parser(
        "list", parents=[JSON], help="the built-in tasks and the reasoning-gym datasets"
    )
    p.set_defaults(func=cmd_tasks_list)
    p = tasks.add_parser("export", help="write a task's SFT/RL datasets and grader")
    p.add_argument("name", help="a built-in task, or rg:DATASET for reasoning-gym's DATASET")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", "--size", type=int, default=1000, help="training items")
    p.add_argument(
        "--n-val",
        "--val-size",
        type=int,
        default=100,
        help="validation items (default 100): drawn after the training items from the same "
        "seed, never repeating a training prompt",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same files")
    p.add_argument(
        "--config",
        metavar="JSON",
        help="rg: only. Fields of the dataset's config (the rest keep reasoning-gym's "
        """defaults), e.g. '{"min_terms": 2, "max_terms": 2, "max_digits": 2}'""",
    )
    p.add_argument(
        "--instruction",
        metavar="TEXT",
        help="rg: only. Appended to each question on a new line, e.g. 'Answer with the "
        "number only.' (default: none)",
    )
    p.add_argument(
        "--extract",
        choices=("answer_tag", "last_number"),
        help="rg: only. The answer in an output without <answer> tags: the whole output "
        "(answer_tag, the default) or its last number (a chatty but right answer counts)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="rg: only. A named config, instruction and extract (`lco tasks list` shows them)",
    )
    p.set_defaults(func=cmd_tasks_export)

    experiment = sub.add_parser("experiment", help="studies over many runs").add_subparsers(
        dest="action", required=True
    )
    p = experiment.add_parser(
        "stability", help="LCO vs PPO/GRPO/REINFORCE over seeds: docs/results/stability.md"
    )
    p.add_argument(
        "--preset",
        choices=["full", "tiny", "quick"],
        default="full",
        help="full: tuning, held-out seeds on lco-tiny, then SmolLM2; tiny: without SmolLM2",
    )
    p.add_argument("--work", default="data/stability", help="run directories (resumable)")
    p.add_argument("--out", default="docs/results", help="where the report and plots go")
    p.add_argument("--steps", type=int, help="override the preset's steps per run")
    p.add_argument("--seeds", type=int, nargs="+", help="override the preset's held-out seeds")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (1 thread each)")
    p.add_argument("--fresh", action="store_true", help="retrain runs already finished")
    p.add_argument("--report-only", action="store_true", help="report on finished runs only")
    p.set_defaults(func=cmd_experiment_stability)

    sub.add_parser(
        "train", help="train locally: lco train --config job.yaml --output DIR", add_help=False
    )

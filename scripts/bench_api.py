"""API benchmark: job-status GET throughput and latency beside a bare FastAPI endpoint, and
how long a submitted job takes to finish its first training step.

    .venv/bin/python scripts/bench_api.py            # ~2 min; needs wrk (apt-get install wrk)
    .venv/bin/python scripts/bench_api.py --skip-first-step   # throughput only, ~40 s

1. Throughput. Starts `lco serve` (embedded default: SQLite, one worker) and a bare FastAPI
   app (one route returning a job-sized JSON constant, no auth, no database) under the same
   uvicorn settings. `wrk` (C, so the load generator takes little of the 2 cores) drives,
   one after the other with the same connections and duration, `GET
   /v1/fine_tuning/jobs/{id}` of a finished job, then of a queued one (its object carries
   its place in the queue and an ETA, from a plan of the whole queue), then the constant
   route. The queued jobs ask for more GPUs than the one worker has, so they stay queued
   and nothing trains during the run. The per-key rate limit is lifted for the run (it
   would cap the status GETs at 20/s). The target is a status GET rate of at least half
   the bare rate, for both jobs.
2. Submit to first step. With the model cached, POSTs an RL job on lco-tiny and polls the
   job until `progress.step >= 1`; once with `rollout_engine: hf` and once with `vllm`
   (vLLM's start-up is part of a job's first step). Median of --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from demo import ROOT, free_port, lco
from openai import OpenAI

from lco_core.tasks import get_task

JOB_SIZED = 2_000  # bytes: about one job object as the API returns it


def bare_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    body = {"id": "ftjob-bare", "object": "fine_tuning.job", "pad": "x" * JOB_SIZED}

    @app.get("/bare")
    def bare() -> dict[str, Any]:
        return body

    return app


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def wrk(url: str, *, seconds: int, connections: int, key: str | None = None) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from one wrk run."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if key:
        cmd[1:1] = ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate, out
    return {"rps": float(rate.group(1)), "p50_ms": ms("50"), "p99_ms": ms("99")}


def rl_job(client: OpenAI, file_id: str, engine: str, gpus: int = 1) -> str:
    return client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=file_id,
        method={  # type: ignore[typeddict-unknown-key]
            "type": "lco",
            "lco": {
                "grader": get_task("addition").grader(),
                "hyperparameters": {
                    "rollout_engine": engine,
                    "batch_size": 8,
                    "n_samples": 8,
                    "max_completion_tokens": 6,
                    "max_steps": 2,
                    "eval_interval": 1000,
                },
            },
        },
        extra_body={"resources": {"gpus": gpus}},
    ).id


def first_step_seconds(client: OpenAI, file_id: str, engine: str) -> float:
    started = time.perf_counter()
    job_id = rl_job(client, file_id, engine)
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if ((job.model_extra or {}).get("progress") or {}).get("step", 0) >= 1:
            elapsed = time.perf_counter() - started
            break
        if job.status in ("failed", "cancelled"):
            raise RuntimeError(f"{job_id} {job.status}: {job.error}")
        time.sleep(0.02)
    while client.fine_tuning.jobs.retrieve(job_id).status not in ("succeeded", "failed"):
        time.sleep(0.2)  # the worker runs one job at a time
    return elapsed


def wait_for_worker(url: str, key: str, timeout: float = 300) -> None:
    """Until `lco serve`'s worker has started and registered: its start-up (imports, torch)
    takes a core for seconds and would otherwise land in the first measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = httpx.get(f"{url}/v1/pools/default", headers={"Authorization": f"Bearer {key}"})
        if pool.status_code == 200 and pool.json()["workers"] > 0:
            time.sleep(2)
            return
        time.sleep(0.5)
    raise TimeoutError("no worker registered")


def queued_job(client: OpenAI, file_id: str, n: int = 5) -> str:
    """The last of `n` jobs that wait for more GPUs than `lco serve`'s worker has."""
    ids = [rl_job(client, file_id, "hf", gpus=2) for _ in range(n)]
    job = client.fine_tuning.jobs.retrieve(ids[-1])
    assert job.status == "queued" and (job.model_extra or {}).get("queue"), job
    return ids[-1]


def finished_job(client: OpenAI, file_id: str) -> str:
    """The newest finished job; without one, a job cancelled while queued."""
    for job in client.fine_tuning.jobs.list(limit=20).data:
        if job.status in ("succeeded", "failed", "cancelled"):
            return job.id
    return client.fine_tuning.jobs.cancel(rl_job(client, file_id, "hf", gpus=2)).id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-first-step", action="store_true", help="throughput only")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.bare_server, log_level="warning")
        return
    if not shutil.which("wrk"):
        sys.exit("bench_api.py needs wrk: apt-get install -y wrk")

    # Measure the API itself, not the per-key rate limit (a deployment setting, 20 req/s by
    # default): lift it for this service.
    os.environ["LCO_RATE_LIMIT_PER_MINUTE"] = os.environ["LCO_RATE_LIMIT_BURST"] = "1000000000"
    data_dir = Path(tempfile.mkdtemp(prefix="lco-bench-api-"))
    lco("migrate", data_dir=data_dir)
    lco("team", "create", "bench", data_dir=data_dir)
    key = lco("key", "create", "--team", "bench", data_dir=data_dir)
    port, bare_port = free_port(), free_port()
    log = (data_dir / "serve.log").open("wb")
    serve = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", *serve],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, __file__, "--bare-server", str(bare_port)], start_new_session=True
        ),
    ]
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", procs[0])
        wait_healthy(f"http://127.0.0.1:{bare_port}/bare", procs[1])
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        items = get_task("addition").examples(64, seed=1)
        data = "".join(json.dumps(i) + "\n" for i in items).encode()
        file_id = client.files.create(file=("rl.jsonl", data), purpose="fine-tune").id

        first: dict[str, list[float]] = {"hf": [], "vllm": []}
        for engine in () if args.skip_first_step else ("hf", "vllm"):
            first_step_seconds(client, file_id, engine)  # warm the page cache and imports
            for _ in range(args.repeats):
                first[engine].append(first_step_seconds(client, file_id, engine))

        # After the first-step runs: the queued jobs wait first in the pool's queue.
        wait_for_worker(f"http://127.0.0.1:{port}", key)
        jobs = {"finished": finished_job(client, file_id), "queued": queued_job(client, file_id)}
        rows: dict[str, dict[str, float]] = {}
        sizes = []
        for name, job_id in jobs.items():
            status_url = f"http://127.0.0.1:{port}/v1/fine_tuning/jobs/{job_id}"
            got = httpx.get(status_url, headers={"Authorization": f"Bearer {key}"})
            sizes.append(len(got.content))
            rows[f"GET /v1/fine_tuning/jobs/{{id}}, {name} job"] = wrk(
                status_url, seconds=args.seconds, connections=args.connections, key=key
            )
        bare = wrk(
            f"http://127.0.0.1:{bare_port}/bare",
            seconds=args.seconds,
            connections=args.connections,
        )
    finally:
        for proc in procs:
            subprocess.run(["kill", "--", f"-{proc.pid}"], check=False)
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, job objects "
        f"{'/'.join(map(str, sizes))} bytes, {os.cpu_count()} CPUs, load average {load}"
    )
    print("| endpoint | req/s | p50 ms | p99 ms | vs bare |")
    print("|---|---|---|---|---|")
    for label, row in [*rows.items(), ("bare FastAPI route", bare)]:
        print(
            f"| {label} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['rps'] / bare['rps']:.2f} |"
        )
    worst = min(row["rps"] for row in rows.values())
    print(f"status/bare throughput: {worst / bare['rps']:.2f} for the slower job (target >= 0.5)")
    for engine, times in first.items() if not args.skip_first_step else ():
        print(
            f"submit -> first training step, rollout_engine {engine}: median "
            f"{statistics.median(times):.2f} s over {len(times)} "
            f"({', '.join(f'{t:.2f}' for t in times)}; target < 10 s)"
        )


if __name__ == "__main__":
    main()

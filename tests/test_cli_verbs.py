"""The client verbs of `lco` against the service: `--json` on every list and get, pause,
resume, events, checkpoints, download, `watch` reading the job's event stream, and the exit
statuses (0 done, 1 an error, 2 usage). In-process against the app (as
tests/test_api_queue.py's CLI tests do), and once through a real `lco serve`.

    .venv/bin/python -m pytest tests/test_cli_verbs.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cli import client as client_commands
from cli.main import main as lco
from jobs.migrate import upgrade
from tests.background import Background
from tests.service_fixtures import (
    ROOT,
    ApiClient,
    LiveService,
    fast_settings,
    free_port,
    new_key,
    register_worker,
    settings_env,
    sft_body,
    sft_lines,
)
from tests.worker_fakes import FAKE_CHILD
from worker.context import WorkerContext
from worker.tasks import run_job

Run = Callable[..., tuple[int, str, str]]


def _submit(api: ApiClient) -> dict[str, Any]:
    file_id = api.upload(sft_lines()).json()["id"]
    body = {**sft_body(file_id), "metadata": {"steps": "2", "delay": "0.05"}}
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def cli(api: ApiClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`lco ARGS` in-process against the app with team-a's key: (status, stdout, stderr)."""
    monkeypatch.setattr(
        client_commands,
        "_client",
        lambda args: TestClient(
            api.client.app, base_url="http://testserver/v1", headers=api.headers
        ),
    )

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = lco([*argv, "--api-key", "unused"])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def finished(api: ApiClient) -> dict[str, Any]:
    """A job run to success by the scripted child: 2 steps of metrics, a checkpoint."""
    job = _submit(api)
    assert run_job(WorkerContext(api.settings, child_command=FAKE_CHILD), job["id"]) is True
    return dict(api.get(f"/v1/fine_tuning/jobs/{job['id']}").json())


def test_every_list_and_get_takes_json(cli: Run, finished: dict[str, Any]) -> None:
    job_id = finished["id"]
    for argv in (
        ["jobs", "list"],
        ["jobs", "events", job_id],
        ["jobs", "checkpoints", job_id],
        ["files", "list"],
    ):
        status, out, _ = cli(*argv, "--json")
        assert status == 0
        page = json.loads(out)
        assert page["object"] == "list" and page["data"], argv
    status, out, _ = cli("jobs", "get", job_id, "--json")
    assert status == 0 and json.loads(out)["status"] == "succeeded"
    file_id = finished["training_file"]
    assert json.loads(cli("files", "get", file_id, "--json")[1])["id"] == file_id
    assert json.loads(cli("pools", "default", "--json")[1])["name"] == "default"
    # Without --json a list is a line per item.
    [line] = cli("jobs", "list")[1].splitlines()
    assert line.startswith(f"{job_id}  succeeded")
    [ckpt] = cli("jobs", "checkpoints", job_id)[1].splitlines()
    assert ckpt.startswith("ftckpt") and " step 2 " in ckpt and "loss=" in ckpt
    events = cli("jobs", "events", job_id)[1].splitlines()
    assert any("fake run starting" in line for line in events)
    # Paging: one item, and on stderr how to get the next page.
    status, out, err = cli("jobs", "events", job_id, "--limit", "1")
    assert status == 0 and len(out.splitlines()) == 1 and err.startswith("(more: --after ")


def test_pause_and_resume(api: ApiClient, cli: Run) -> None:
    job = _submit(api)
    status, out, _ = cli("jobs", "pause", job["id"])
    assert status == 0 and json.loads(out)["status"] == "paused"
    status, out, _ = cli("jobs", "resume", job["id"], "--json")
    assert status == 0 and json.loads(out)["status"] == "queued"
    assert json.loads(cli("jobs", "cancel", job["id"])[1])["status"] == "cancelled"


def test_download_writes_the_newest_checkpoint_as_a_tar(
    cli: Run, finished: dict[str, Any], tmp_path: Path
) -> None:
    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    status, out, _ = cli("jobs", "download", finished["id"], "--out", str(out_dir))
    assert status == 0
    path = Path(out.strip())
    assert path.parent == out_dir and path.name == f"{finished['id']}-step-2.tar"
    with tarfile.open(path) as tar:
        assert f"{finished['id']}-step-2/config.json" in tar.getnames()
    assert [p.name for p in out_dir.iterdir()] == [path.name]  # no partial file left
    # A named checkpoint, to a named file.
    ckpt = json.loads(cli("jobs", "checkpoints", finished["id"], "--json")[1])["data"][0]["id"]
    named = out_dir / "named.tar"
    assert cli("jobs", "download", finished["id"], ckpt, "--out", str(named))[0] == 0
    assert named.read_bytes() == path.read_bytes()
    # A file's contents, under its own name.
    assert cli("files", "content", finished["training_file"], "--out", str(out_dir))[0] == 0
    assert (out_dir / "train.jsonl").read_bytes() == sft_lines()
    status, _, err = cli("jobs", "download", finished["id"], "ftckpt-nope")
    assert status == 1 and err.startswith("error: HTTP 404")


def test_watch_reads_the_stream_to_the_end(cli: Run, finished: dict[str, Any]) -> None:
    status, out, _ = cli("jobs", "watch", finished["id"])
    assert status == 0
    lines = out.splitlines()
    # A finished job's history: its current step with that step's metrics, then its end.
    assert lines[-2].startswith("succeeded step 2/") and "loss=0.5" in lines[-2]
    assert lines[-1] == f"{finished['id']}: succeeded -> {finished['fine_tuned_model']}"


def _sse(*messages: tuple[str, dict[str, Any]], event_id: int = 0) -> bytes:
    return "".join(
        f"id: {event_id + n}\nevent: {event}\ndata: {json.dumps(data)}\n\n: keepalive\n\n"
        for n, (event, data) in enumerate(messages)
    ).encode()


def test_watch_prints_phases_then_steps_and_follows_again_after_a_dropped_stream(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scripted stream: each step's line waits for that step's metrics; the first stream
    ends without `end` (a server's time limit), so watch connects again, with Last-Event-ID."""

    def job(status: str, step: int, **details: str) -> tuple[str, dict[str, Any]]:
        progress = {"step": step, "total_steps": 2}
        return "job", {"status": status, "progress": progress, "status_details": details}

    def metrics(step: int) -> tuple[str, dict[str, Any]]:
        return "metrics", {"step": step, "metrics": {"loss": 1.0 / step}}

    first = _sse(job("queued", 0, phase="queued"), job("running", 0, phase="training"),
                 job("running", 1), metrics(1))  # fmt: skip
    second = _sse(job("running", 2), metrics(1), metrics(2), job("succeeded", 2),
                  ("end", {"status": "succeeded"}), event_id=4)  # fmt: skip
    streams, seen = [first, second], []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        body = streams.pop(0)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    monkeypatch.setattr(client_commands, "RECONNECT_S", 0.0)
    monkeypatch.setattr(
        client_commands,
        "_client",
        lambda args: httpx.Client(
            transport=httpx.MockTransport(handler), base_url="http://stub/v1"
        ),
    )
    assert lco(["jobs", "watch", "ftjob-1", "--api-key", "unused"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "queued    queued",
        "running   training",
        "running   step 1/2  loss=1",
        "running   step 2/2  loss=0.5",
        "succeeded step 2/2  loss=0.5",
        "ftjob-1: succeeded",
    ]
    assert seen == [None, "3"]


def test_submit_retries_a_lost_answer_with_the_same_idempotency_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) == 1:  # the job was made, but its answer is lost
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"id": "ftjob-1", "status": "queued"})

    monkeypatch.setattr(
        client_commands,
        "_client",
        lambda args: httpx.Client(transport=httpx.MockTransport(handler), base_url="http://s/v1"),
    )
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"model": "lco-tiny", "training_file": "file-abc"}))
    assert lco(["jobs", "submit", str(spec), "--api-key", "unused"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "ftjob-1"
    assert len(keys) == 2 and keys[0] == keys[1] and str(keys[0]).startswith("lco-cli-")
    # A job file that does not parse: one line naming it.
    spec.write_text("model: [lco-tiny")
    spec.rename(bad := tmp_path / "job.yaml")
    assert lco(["jobs", "submit", str(bad), "--api-key", "unused"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad}: ")


def test_exit_statuses(cli: Run) -> None:
    status, out, err = cli("jobs", "get", "ftjob-nope")
    assert status == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: HTTP 404: ")
    for argv in (["jobs", "list", "--limit", "many"], ["jobs", "frobnicate"]):
        with pytest.raises(SystemExit) as usage:
            cli(*argv)
        assert usage.value.code == 2


def test_no_api_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LCO_API_KEY", raising=False)
    assert lco(["jobs", "list", "--base-url", f"http://127.0.0.1:{free_port()}/v1"]) == 2
    assert capsys.readouterr().err == "error: no API key: pass --api-key or set LCO_API_KEY\n"


def test_through_a_real_lco_serve_watch_follows_the_stream_until_cancel(tmp_path: Path) -> None:
    """`lco serve` (no worker: the job stays queued); `lco jobs watch` shows it queued, and
    ends when `lco jobs cancel` (another process) cancels it: exit 1, the end on the last line."""
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    key = new_key(settings, "live")
    register_worker(settings, gpus=1, hours=24)  # a pool to queue in
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    service.start(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--no-worker"],
        tmp_path / "serve.log",
    )
    env = {**settings_env(settings), "LCO_BASE_URL": service.base_url, "LCO_API_KEY": key}

    def lco_sub(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        service.wait_healthy()
        data = tmp_path / "train.jsonl"
        data.write_bytes(sft_lines())
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps(sft_body("train.jsonl")))
        submitted = lco_sub("jobs", "submit", str(spec), "--json")
        assert submitted.returncode == 0, submitted.stderr + service.dump_logs()
        job_id = json.loads(submitted.stdout)["id"]
        assert json.loads(lco_sub("jobs", "list", "--json").stdout)["data"][0]["id"] == job_id
        watch = Background.start(
            [sys.executable, "-m", "cli.main", "jobs", "watch", job_id],
            env=env,
            cwd=ROOT,
            logs=tmp_path / "watch",
        )
        try:
            assert watch.first_line().startswith("queued")  # from the stream
            assert lco_sub("jobs", "cancel", job_id).returncode == 0
            assert watch.wait() == 1, watch.stderr
        finally:
            watch.kill()
        assert watch.stdout.splitlines()[-1] == f"{job_id}: cancelled"
    finally:
        service.stop()


def test_watch_on_a_terminal_draws_a_progress_bar_of_the_steps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a terminal, phases stay lines and the steps are one live bar (rich): done/total and
    the step's headline metrics."""
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    follower = client_commands._Follower("ftjob-1", client_commands.StepBar(console))
    details = {"phase": "training"}
    follower.feed("job", {"status": "running", "progress": {"step": 0, "total_steps": 2},
                          "status_details": details})  # fmt: skip
    for step in (1, 2):
        follower.feed("job", {"status": "running", "progress": {"step": step, "total_steps": 2},
                              "status_details": {}})  # fmt: skip
        follower.feed("metrics", {"step": step, "metrics": {"loss": 1.0 / step}})
    assert follower.feed("end", {"status": "succeeded"}) == 0
    text = out.getvalue()
    assert "running   training" in text
    assert "2/2" in text and "loss=0.5" in text
    assert capsys.readouterr().out == "ftjob-1: succeeded\n"  # after the bar, as a line

"""The manual quickstart, command by command, as a user types it: `lco serve`, `lco team
create`, `lco key create`, LCO_BASE_URL/LCO_API_KEY, `lco tasks export`, then
`lco jobs submit --config job.yaml` with the same job file `lco train` takes (local paths,
relative to it: uploaded and replaced by file ids) and `lco jobs watch` to the end.

    .venv/bin/python -m pytest tests/test_cli_quickstart.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.service_fixtures import (
    ROOT,
    STRING_CHECK,
    fast_settings,
    free_port,
    lco_cli,
    lco_serve,
    settings_env,
)

pytestmark = pytest.mark.e2e


def test_quickstart_submits_a_job_file_with_local_paths(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    settings = fast_settings(tmp_path / "data")
    # `lco serve` makes the database; the admin commands then use it.
    with lco_serve(settings, tmp_path / "serve.log") as service:
        lco_cli(settings, "team", "create", "demo")
        key = lco_cli(settings, "key", "create", "--team", "demo").strip().splitlines()[-1]
        env = {**settings_env(settings), "LCO_BASE_URL": service.base_url, "LCO_API_KEY": key}

        def lco(*args: str) -> subprocess.CompletedProcess[str]:
            # From the job file's directory's parent: its paths are relative to the file.
            return subprocess.run(
                [sys.executable, "-m", "cli.main", *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )

        exported = lco("tasks", "export", "addition", "--out", "work/data/addition")
        assert exported.returncode == 0, exported.stderr
        job_file = tmp_path / "work" / "job.yaml"
        job = {
            "model": "lco-tiny",
            "training_file": "data/addition/rl_train.jsonl",
            "validation_file": "data/addition/rl_val.jsonl",
            "seed": 1,
            "method": {
                "type": "lco",
                "lco": {
                    "grader": STRING_CHECK,
                    "hyperparameters": {
                        "batch_size": 2,
                        "n_samples": 2,
                        "max_completion_tokens": 6,
                        "max_steps": 2,
                        "eval_samples": 4,
                    },
                },
            },
        }
        job_file.write_text(yaml.safe_dump(job))

        submitted = lco("jobs", "submit", "--config", str(job_file))
        assert submitted.returncode == 0, submitted.stderr
        body = json.loads(submitted.stdout)
        data = tmp_path / "work" / "data" / "addition"
        assert submitted.stderr.splitlines() == [
            f"uploaded {data / 'rl_train.jsonl'} as {body['training_file']} (training_file)",
            f"uploaded {data / 'rl_val.jsonl'} as {body['validation_file']} (validation_file)",
        ]
        assert body["training_file"].startswith("file-")
        assert body["validation_file"].startswith("file-")

        watched = lco("jobs", "watch", body["id"])  # follows the job's event stream
        assert watched.returncode == 0, watched.stdout + watched.stderr + service.dump_logs()
        assert watched.stdout.strip().splitlines()[-1].startswith(f"{body['id']}: succeeded")

        # File ids are kept as they are; a path that is neither fails before anything is sent.
        job["training_file"] = body["training_file"]
        job["validation_file"] = "data/addition/missing.jsonl"
        job_file.write_text(yaml.safe_dump(job))
        refused = lco("jobs", "submit", str(job_file))
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"error: validation_file: no such file {data / 'missing.jsonl'} "
            "(nor a file id `file-...`)"
        ]
        listed = lco("jobs", "list")
        assert len(listed.stdout.splitlines()) == 1  # the first job only


def test_a_file_id_in_a_job_file_is_sent_as_it_is(tmp_path: Path) -> None:
    """No server needed to see that nothing is uploaded for ids: the refusal names the
    service, not a missing file."""
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"model": "lco-tiny", "training_file": "file-abc"}))
    env = {"LCO_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "LCO_API_KEY": "k"}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "jobs", "submit", "--config", str(job_file)],
        cwd=ROOT,
        env={**settings_env(fast_settings(tmp_path)), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach the service" in result.stderr and "uploaded" not in result.stderr

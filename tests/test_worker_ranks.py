"""How many ranks a worker runs a job's training as, and on which GPUs (worker.ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.settings import Settings
from worker.ranks import rank_env, training_ranks


def test_a_cpu_worker_runs_its_setting_of_gloo_ranks_whatever_the_job_asks(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu", worker_cpu_ranks=2)
    assert training_ranks(settings, gpus=1) == 2
    assert training_ranks(settings, gpus=4) == 2
    assert training_ranks(Settings(data_dir=tmp_path, device="cpu"), gpus=4) == 1


def test_a_gpu_worker_runs_one_rank_per_gpu_asked_for_pinned_to_its_first_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, device="cuda", worker_cpu_ranks=3)
    assert training_ranks(settings, gpus=2) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert rank_env(settings, 2)["CUDA_VISIBLE_DEVICES"] == "3,5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert rank_env(settings, 2)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in rank_env(settings, 1)

"""DPO: the two-pass gradient is the DPO loss's own, training on a generated preference task
lowers the loss and raises the preference accuracy on held-out pairs, resume is exact, and
the API takes OpenAI's `method.type: dpo` job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lco_core.callbacks import Callbacks
from lco_core.dpo import DPOTrainer
from lco_core.runner import build_trainer, run_job
from lco_core.tasks import get_task, write_jsonl
from lco_spec.job import parse_job_spec
from tests.service_fixtures import ApiClient, jsonl, sft_lines


def dpo_spec(data: Path, validation: Path | None = None, **hp: Any) -> Any:
    body: dict[str, Any] = {
        "model": "lco-tiny",
        "training_file": str(data),
        "seed": 3,
        "method": {"type": "dpo", "dpo": {"hyperparameters": hp}},
    }
    if validation is not None:
        body["validation_file"] = str(validation)
    return parse_job_spec(body)


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    task = get_task("addition")
    train = write_jsonl(task.dpo_examples(64, seed=1), tmp_path / "train.jsonl")
    valid = write_jsonl(task.dpo_examples(32, seed=2), tmp_path / "valid.jsonl")
    return train, valid


def test_the_two_pass_gradient_is_the_dpo_losss_gradient(
    tmp_path: Path, pairs: tuple[Path, Path]
) -> None:
    train, _ = pairs
    spec = dpo_spec(train, batch_size=6, micro_batch_size=4, beta=0.5, max_steps=2)
    trainer: Any = build_trainer(
        spec, training_file=train, validation_file=None, output_dir=tmp_path / "r",
        callbacks=Callbacks(),
    )  # fmt: skip
    assert isinstance(trainer, DPOTrainer)
    trainer.ref = trainer.pair_logprobs(trainer.pairs)
    # Move off the reference, so the margins (and sigmoid weights) differ between pairs.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    captured: dict[str, torch.Tensor] = {}

    def capture() -> float:
        for name, p in trainer.model.named_parameters():
            captured[name] = p.grad.detach().clone()
            p.grad = None
        return 0.0

    trainer.apply_gradients = capture
    trainer.train_step(1)
    # Autograd over the definition: full logits, sums of log-probabilities of the outputs.
    from lco_core.data import example_indices, pack_examples

    indices = example_indices(spec.seed, len(trainer.pairs), 0, 6)
    batch = [trainer.pairs[i] for i in indices]
    seqs = [p.chosen for p in batch] + [p.rejected for p in batch]
    packed = pack_examples(seqs, trainer.pad_id)
    trainer.model.eval()
    logits = trainer.model(input_ids=packed.input_ids, attention_mask=packed.attention).logits
    logp = torch.log_softmax(logits.float(), -1)[packed.rows, packed.cols]
    token_lp = logp.gather(-1, packed.targets[:, None])[:, 0]
    seq_lp = torch.zeros(len(seqs)).index_add(0, packed.rows, token_lp)
    policy = torch.stack([seq_lp[:6], seq_lp[6:]], 1)
    ref = trainer.ref[indices].float()
    margins = 0.5 * ((policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1]))
    assert margins.std() > 0.01
    loss = -F.logsigmoid(margins).mean()
    loss.backward()
    for name, p in trainer.model.named_parameters():
        # Float32 sums in another order differ by ~1e-6 per element (a summed embedding
        # row most), so the comparison is of whole gradients: relative error under 1e-5.
        error = float((captured[name] - p.grad).norm() / p.grad.norm().clamp_min(1e-12))
        assert error < 1e-5, (name, error)


def test_dpo_lowers_the_loss_and_raises_held_out_preference_accuracy(
    tmp_path: Path, pairs: tuple[Path, Path]
) -> None:
    train, valid = pairs
    spec = dpo_spec(valid, valid, batch_size=8, max_steps=12, eval_interval=12)
    result = run_job(
        spec.model_copy(update={"training_file": str(train)}),
        training_file=train,
        validation_file=valid,
        output_dir=tmp_path / "run",
    )
    assert result.status == "succeeded"
    summary = result.summary
    # Before training the policy is the reference: every margin 0, loss log 2. Measured
    # after 12 steps: loss 0.624, accuracy 0.81 on the 32 held-out pairs.
    assert summary["initial_eval_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert summary["initial_eval_rewards_accuracies"] == 0.0
    assert summary["final_eval_loss"] < 0.66
    assert summary["final_eval_rewards_accuracies"] >= 0.7
    assert summary["final_eval_rewards_margins"] > 0


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    train, _ = pairs

    def losses(out: Path, steps: int) -> list[float]:
        spec = dpo_spec(train, batch_size=8, max_steps=steps, checkpoint_interval=2,
                        eval_samples=1)  # fmt: skip
        run_job(spec, training_file=train, validation_file=None, output_dir=out)
        from lco_core.metrics import MetricsLog

        return [m["loss"] for m in MetricsLog(out / "metrics.jsonl").read()]

    straight = losses(tmp_path / "a", 4)
    losses(tmp_path / "b", 2)
    resumed = losses(tmp_path / "b", 4)  # the same output dir: resumes from step-2
    assert resumed == pytest.approx(straight, rel=1e-6)


def test_the_api_takes_a_dpo_job_with_a_preference_file(api: ApiClient) -> None:
    task = get_task("addition")
    file_id = api.upload(jsonl(task.dpo_examples(8))).json()["id"]
    body = {"model": "lco-tiny", "training_file": file_id,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}}  # fmt: skip
    job = api.post("/v1/fine_tuning/jobs", json=body)
    assert job.status_code == 200, job.text
    assert job.json()["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    sft_file = api.upload(sft_lines()).json()["id"]
    wrong = api.post("/v1/fine_tuning/jobs", json={**body, "training_file": sft_file})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "training_file"
    bad_beta = {**body, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}
    error = api.post("/v1/fine_tuning/jobs", json=bad_beta).json()["error"]
    assert error["param"] == "method.dpo.hyperparameters.beta"

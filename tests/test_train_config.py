"""The resolved training config is the job spec's hyperparameter model: one definition each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lco_spec.errors import SpecError
from lco_spec.job import ReinforcementHyperparameters, parse_job_spec
from lco_spec.train_config import TrainConfig, resolve_config

GRADER = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}  # fmt: skip


def rl_spec(**hp: object) -> dict[str, object]:
    return {
        "model": "lco-tiny",
        "training_file": "file-1",
        "method": {"type": "lco", "lco": {"grader": GRADER, "hyperparameters": hp}},
    }


def test_every_hyperparameter_reaches_the_config_without_a_second_declaration() -> None:
    assert set(ReinforcementHyperparameters.model_fields) <= set(TrainConfig.model_fields)
    # A value other than the default passes through for every field that cannot be "auto".
    given = {"beta": 7.5, "top_p": 0.9, "weight_decay": 0.01,
             "lr_schedule": "cosine", "topk_old": 5, "diagnostic_interval": 3}  # fmt: skip
    cfg = resolve_config(parse_job_spec(rl_spec(**given)), n_train=40)
    for name, value in given.items():
        assert getattr(cfg, name) == value, name
    assert cfg.describe()["beta"] == 7.5


def test_kl_coef_is_grpo_only() -> None:
    """Only GRPO's loss has the KL term: elsewhere a non-zero kl_coef is refused, never
    accepted and ignored."""

    def spec(algorithm: str) -> dict[str, object]:
        hp = {"algorithm": algorithm, "kl_coef": 0.1}
        return rl_spec() | {"method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": hp}}}  # fmt: skip

    assert resolve_config(parse_job_spec(spec("grpo")), n_train=40).kl_coef == 0.1
    for algorithm in ("lco", "ppo", "reinforce"):
        with pytest.raises(SpecError) as err:
            resolve_config(parse_job_spec(spec(algorithm)), n_train=40)
        assert err.value.param == "method.reinforcement.hyperparameters.kl_coef"
    assert resolve_config(parse_job_spec(rl_spec(kl_coef=0.0)), n_train=40).kl_coef == 0.0


def test_auto_fields_are_resolved_to_concrete_values() -> None:
    cfg = resolve_config(parse_job_spec(rl_spec()), n_train=40)
    assert (cfg.n_samples, cfg.max_completion_tokens, cfg.advantage) == (8, 64, "group")
    assert cfg.batch_size == 8 and cfg.total_steps == 5 and cfg.learning_rate == 1e-4
    assert "auto" not in {cfg.batch_size, cfg.n_epochs, cfg.eval_samples}


@pytest.mark.parametrize(
    ("trl", "ours", "value"),
    [
        ("num_generations", "n_samples", 4),
        ("max_completion_length", "max_completion_tokens", 32),
        ("epsilon", "clip_eps", 0.3),
        ("epsilon_high", "clip_eps_high", 0.28),
    ],
)
def test_trl_names_are_aliases_of_the_same_knob(trl: str, ours: str, value: float) -> None:
    hp = {trl: value, "algorithm": "grpo"}
    spec = parse_job_spec({**rl_spec(**hp), "method": {"type": "reinforcement",
                           "reinforcement": {"grader": GRADER, "hyperparameters": hp}}})  # fmt: skip
    assert getattr(resolve_config(spec, n_train=40), ours) == value


def test_an_unknown_knob_is_refused_naming_it() -> None:
    with pytest.raises(SpecError) as err:
        parse_job_spec(rl_spec(num_iterations=2))
    assert err.value.param == "method.lco.hyperparameters.num_iterations"


def test_a_knob_given_under_both_names_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_job_spec(rl_spec(n_samples=4, num_generations=6))
    assert err.value.param == "method.lco.hyperparameters.num_generations"


def test_one_learning_rate_rule_by_size_whatever_the_model_is_called(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """lco-tiny by name, as a fine-tuned name, or as a local dir (`lco train` on a
    checkpoint) takes the same auto learning rate; a model over 20M parameters the default."""
    from lco_core.runner import config_parameters

    def lr(model: str, n_params: int | None = None) -> float:
        spec = parse_job_spec({**rl_spec(), "model": model})
        return resolve_config(spec, n_train=40, n_params=n_params).learning_rate

    tiny = config_parameters(tiny_model_path)
    assert tiny is not None and tiny < 1_000_000
    assert lr("lco-tiny") == lr("ft:lco-tiny:team::ftjob-1") == lr(str(tiny_model_path), tiny)
    assert lr("lco-tiny") == 1e-4
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text(
        json.dumps({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152})
    )  # fmt: skip
    assert lr(str(big), config_parameters(big)) == 2e-5  # LCO's default table

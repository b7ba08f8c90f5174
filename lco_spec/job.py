"""The fine-tuning job spec: OpenAI's `POST /v1/fine_tuning/jobs` body plus our extensions.

OpenAI's fields keep their meaning; everything we add is optional. `"auto"` is accepted
wherever OpenAI accepts it and is resolved by the training core (it depends on the model
and the dataset). `method.type: lco` is shorthand for reinforcement with `algorithm: lco`;
`JobSpec.normalized()` rewrites it so the rest of the system sees one shape.

    spec = parse_job_spec({"model": "lco-tiny", "training_file": "file-1",
                           "method": {"type": "lco", "lco": {"grader": {...}}}})
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lco_spec.errors import SpecError, pydantic_error_to_spec_error
from lco_spec.graders import GraderSpec

Auto = Literal["auto"]
Name = Annotated[str, Field(min_length=1, max_length=256)]

# OpenAI's documented limits on the create body.
SEED_MAX = 2**31 - 1
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512

ALGORITHMS = ("lco", "grpo", "ppo", "reinforce")

LCO_LOSSES = ("lco_kld", "lco_mse", "lco_logcosh")


class Strict(BaseModel):
    """Unknown fields are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The linear layers of a decoder block, per HF `model_type`: what LoRA's default
# `target_modules: all-linear` means, and what a submission checks named modules against
# (an unknown family is checked by the trainer, which sees the real modules).
LORA_LINEAR_MODULES: dict[str, tuple[str, ...]] = {
    family: ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for family in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "olmo", "olmo2")
}


class LoraConfig(Strict):
    """Train a low-rank adapter (Hu et al., 2021) instead of every weight: each targeted
    linear layer W becomes W + (alpha / r) B A with A [r, in], B [out, r] trained and W
    frozen. Checkpoints then hold only A and B (megabytes)."""

    r: Annotated[int, Field(ge=1, le=4096)] = 16
    # auto: 2 r (the scale alpha / r is then 2, as in TRL's and Tinker's examples).
    alpha: Annotated[int, Field(ge=1, le=100_000)] | Auto = "auto"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Module names as the model spells them (`q_proj`, ...); all-linear: every linear layer
    # of the decoder blocks (never the LM head, which the fused loss reads directly).
    target_modules: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.]+$")]],
            Field(min_length=1, max_length=64),
        ]
        | Literal["all-linear"]
    ) = "all-linear"

    @property
    def resolved_alpha(self) -> int:
        return 2 * self.r if self.alpha == "auto" else self.alpha


class CommonHyperparameters(Strict):
    """Shared by every method: OpenAI's three plus optimisation and checkpoint controls."""

    batch_size: Annotated[int, Field(ge=1, le=4096)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=1000)] | Auto = "auto"
    n_epochs: Annotated[int, Field(ge=1, le=1000)] | Auto = "auto"
    # Extensions.
    learning_rate: Annotated[float, Field(gt=0, le=1.0)] | None = None
    max_steps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0, le=100_000)] = 0
    weight_decay: Annotated[float, Field(ge=0, le=1.0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0, le=1e6)] | None = None
    checkpoint_interval: Annotated[int, Field(ge=1, le=1_000_000)] | Auto = "auto"
    eval_interval: Annotated[int, Field(ge=1, le=1_000_000)] | Auto = "auto"
    eval_samples: Annotated[int, Field(ge=1, le=100_000)] | Auto = "auto"
    max_seq_len: Annotated[int, Field(ge=8, le=131_072)] = 512
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Sequences per forward/backward; their gradients accumulate into one optimiser step
    # (TRL: per_device_train_batch_size). auto: as many as fit an activation budget
    # (lco_core.memory).
    micro_batch_size: Annotated[int, Field(ge=1, le=4096)] | Auto = "auto"
    # Keep only each decoder layer's input and recompute the rest in backward.
    gradient_checkpointing: bool = False
    # Tokens per chunk of the fused LM-head loss; auto: one chunk of logits within 32 MiB on
    # CPU, 1 GiB on CUDA (`lco_core/memory.py`).
    loss_chunk_size: Annotated[int, Field(ge=1, le=1_000_000)] | Auto = "auto"
    # A LoRA adapter instead of a full fine-tune (None: full). Left out of the stored spec
    # when off, so specs stored before the field existed and after compare alike.
    lora: LoraConfig | None = Field(default=None, exclude_if=lambda value: value is None)


class SupervisedHyperparameters(CommonHyperparameters):
    """SFT: cross-entropy on assistant tokens only."""


class ReinforcementHyperparameters(CommonHyperparameters):
    """RL: LCO by default; the baselines run in the same trainer on the same rollouts."""

    algorithm: Literal["lco", "grpo", "ppo", "reinforce"] = "lco"
    lco_loss: Literal["lco_kld", "lco_mse", "lco_logcosh"] = "lco_kld"
    # LCO's target temperature; 2 is the stability study's choice over 10 (README).
    beta: Annotated[float, Field(gt=0, le=1e4)] = 2.0
    vocab_advantage: Literal["sampled", "estimate"] = "sampled"
    target_base: Literal["old", "current"] = "old"
    split_pos_neg: bool = False
    # TRL's names are accepted as aliases where the knob is the same
    # (GRPOConfig's num_generations, max_completion_length, epsilon, epsilon_high). TRL's
    # `beta` is NOT ours: there it is the KL coefficient (`kl_coef` here); ours is LCO's
    # target temperature.
    n_samples: Annotated[int, Field(ge=1, le=256)] | Auto = Field(
        default="auto", validation_alias=AliasChoices("n_samples", "num_generations")
    )
    temperature: Annotated[float, Field(gt=0, le=10)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_completion_tokens: Annotated[int, Field(ge=1, le=65_536)] | Auto = Field(
        default="auto",
        validation_alias=AliasChoices("max_completion_tokens", "max_completion_length"),
    )
    rollout_engine: Literal["vllm", "hf", "auto"] = "auto"
    # Truncated importance sampling for the ratio losses (grpo, ppo): each token's advantage
    # is weighted by min(pi_trainer / pi_engine, cap), correcting for the rollout engine's
    # numerics differing from the trainer's (bf16 vLLM on GPU). None: off.
    importance_cap: Annotated[float, Field(ge=1, le=1e3)] | None = None
    advantage: Literal["group", "rloo", "raw", "gae"] | Auto = "auto"
    advantage_scale: Literal["std", "none"] = "std"
    token_aggregation: Literal["token_mean", "sequence_mean", "constant"] = "token_mean"
    ppo_epochs: Annotated[int, Field(ge=1, le=64)] = 1
    mini_batches: Annotated[int, Field(ge=1, le=1024)] = 1
    clip_eps: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.2, validation_alias=AliasChoices("clip_eps", "epsilon")
    )
    clip_eps_high: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, validation_alias=AliasChoices("clip_eps_high", "epsilon_high")
    )
    kl_coef: Annotated[float, Field(ge=0, le=100)] = 0.0
    topk_old: Annotated[int, Field(ge=1, le=1024)] = 20
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    gae_lambda: Annotated[float, Field(ge=0, le=1)] = 0.95
    value_coef: Annotated[float, Field(ge=0, le=100)] = 0.5
    # The positive/negative-advantage split of the grad norm (a second backward through the
    # trunk) and KL(new || old) (a forward after the update) are measured every
    # `diagnostic_interval` steps (and at step 1); 1 = every step.
    split_grad_norm: bool = True
    diagnostic_interval: Annotated[int, Field(ge=1, le=1_000_000)] = 10


class DpoHyperparameters(CommonHyperparameters):
    """DPO (Rafailov et al., 2023): OpenAI's `beta` (auto: 0.1) is the strength of the implicit
    KL to the reference model, the job's starting model. It is not LCO's `beta`."""

    beta: Annotated[float, Field(gt=0, le=1e4)] | Auto = "auto"


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters = SupervisedHyperparameters()


class ReinforcementMethod(Strict):
    grader: GraderSpec
    hyperparameters: ReinforcementHyperparameters = ReinforcementHyperparameters()


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters = DpoHyperparameters()


class Method(Strict):
    type: Literal["supervised", "reinforcement", "lco", "dpo"]
    supervised: SupervisedMethod | None = None
    reinforcement: ReinforcementMethod | None = None
    lco: ReinforcementMethod | None = None
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _matching_block(self) -> Method:
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.reinforcement (with a grader) is required")
        if self.type == "lco" and self.lco is None and self.reinforcement is None:
            raise ValueError("method.lco (with a grader) is required")
        for other in ("supervised", "reinforcement", "lco", "dpo"):
            if other == self.type or (self.type == "lco" and other == "reinforcement"):
                continue
            if getattr(self, other) is not None:
                raise ValueError(f"method.{other} does not belong to method.type '{self.type}'")
        return self

    @property
    def is_rl(self) -> bool:
        return self.type in ("reinforcement", "lco")

    @property
    def rl(self) -> ReinforcementMethod:
        block = self.reinforcement or self.lco
        if block is None:
            raise SpecError("not a reinforcement method", param="method.type")
        return block

    @property
    def sft(self) -> SupervisedMethod:
        return self.supervised or SupervisedMethod()

    @property
    def preference(self) -> DpoMethod:
        return self.dpo or DpoMethod()


class WandbIntegration(Strict):
    """OpenAI's `integrations[].wandb`: the W&B run a job's metrics also go to."""

    project: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    entity: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    tags: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=50)]
        | None
    ) = None


class Integration(Strict):
    """One of OpenAI's job integrations; W&B is the only type OpenAI defines. The deployment
    must configure W&B too (lco_core.metric_sinks): without it the job trains and records a
    warning event."""

    type: Literal["wandb"]
    wandb: WandbIntegration


class Resources(Strict):
    """What the job needs from its pool (`lco train` runs where it is and ignores it)."""

    gpus: Annotated[int, Field(ge=1, le=64)] = 1


class JobSpec(Strict):
    """The whole request body of a job, as both the API and `lco train` take it."""

    model: Name
    training_file: Name
    validation_file: Name | None = None
    # OpenAI: up to 64 characters; it becomes part of the model name, so no ':'.
    suffix: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")] | None = None
    # Strict: OpenAI's integer does not take "5", true or 5.0.
    seed: Annotated[int, Field(strict=True, ge=0, le=SEED_MAX)] | None = None
    # OpenAI's limits (checked in `_check_metadata`, so every violation names `metadata`).
    metadata: dict[str, str] | None = None
    method: Method = Method(type="supervised")
    # OpenAI's third-party integrations (W&B). Left out of the stored spec when empty, so
    # specs stored before the field existed and after compare alike.
    integrations: Annotated[list[Integration], Field(max_length=10)] = Field(
        default=[], exclude_if=lambda value: not value
    )
    # Deprecated by OpenAI in favour of `method` but still accepted by it: a body without
    # `method` that gives these trains supervised with them (`normalized()` moves them into
    # `method.supervised.hyperparameters`; never stored).
    hyperparameters: SupervisedHyperparameters | None = Field(default=None, exclude=True)
    # Extensions for the shared GPU pools: scheduling only, they do not change the training.
    priority: Literal["low", "normal", "high"] = "normal"
    pool: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None
    ) = None
    resources: Resources = Resources()

    @field_validator("metadata", mode="before")
    @classmethod
    def _check_metadata(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("metadata must be an object of string keys and string values")
        if len(value) > METADATA_MAX_PAIRS:
            raise ValueError(f"metadata may have at most {METADATA_MAX_PAIRS} key-value pairs")
        for key, item in value.items():
            if not isinstance(key, str):  # a YAML spec may have non-string keys
                raise ValueError(f"metadata keys must be strings: {key!r}")
            if len(key) > METADATA_MAX_KEY:
                raise ValueError(
                    f"metadata keys may be at most {METADATA_MAX_KEY} characters: {key[:80]!r}"
                )
            if not isinstance(item, str):
                raise ValueError(f"metadata[{key!r}] must be a string")
            if len(item) > METADATA_MAX_VALUE:
                raise ValueError(
                    f"metadata values may be at most {METADATA_MAX_VALUE} characters: "
                    f"metadata[{key!r}]"
                )
        return value

    def normalized(self) -> JobSpec:
        """Top-level `hyperparameters` move into `method.supervised`; `type: lco` becomes
        `type: reinforcement` with `algorithm: lco`."""
        if self.hyperparameters is not None:
            # OpenAI refuses both at once rather than guess which one wins.
            if "method" in self.model_fields_set:
                raise SpecError(
                    "hyperparameters is deprecated and cannot be given with method; "
                    "put them in method.<type>.hyperparameters",
                    param="hyperparameters",
                )
            method = Method(
                type="supervised",
                supervised=SupervisedMethod(hyperparameters=self.hyperparameters),
            )
            return self.model_copy(update={"method": method, "hyperparameters": None})
        if self.method.type != "lco":
            return self
        block = self.method.rl
        if (
            "algorithm" in block.hyperparameters.model_fields_set
            and block.hyperparameters.algorithm != "lco"
        ):
            raise SpecError(
                "method.type 'lco' runs algorithm 'lco'; use method.type 'reinforcement' for "
                f"'{block.hyperparameters.algorithm}'",
                param="method.lco.hyperparameters.algorithm",
            )
        hp = block.hyperparameters.model_copy(update={"algorithm": "lco"})
        method = Method(
            type="reinforcement", reinforcement=block.model_copy(update={"hyperparameters": hp})
        )
        return self.model_copy(update={"method": method})


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a request body or YAML mapping into a normalised JobSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError("the job spec must be a JSON object")
    try:
        return JobSpec.model_validate(data).normalized()
    except ValidationError as exc:
        raise pydantic_error_to_spec_error(exc) from None

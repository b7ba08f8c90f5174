"""Service settings from the environment (prefix `LCO_`), built by a factory, never at import.

    settings = Settings()                       # reads LCO_DATA_DIR, LCO_DATABASE_URL, ...
    settings = Settings(data_dir=Path("/tmp/x")) # explicit values win over the environment

Defaults are the embedded single-machine setup: a SQLite file and a broker that needs no
server, both under `data_dir`. `environment="production"` refuses those defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "filesystem://"


class Settings(BaseSettings):
    """Everything the API, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="LCO_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    # None means the embedded default under data_dir (see `effective_*` below).
    database_url: str | None = None
    broker_url: str | None = None

    # Request limits: uploads may be large, every other body is small JSON.
    max_upload_bytes: Annotated[int, Field(ge=1)] = 512 * 1024 * 1024
    max_json_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_dataset_errors: Annotated[int, Field(ge=1, le=1000)] = 20
    # What one training step may ask for, checked at submission (lco_spec.step_budget):
    # tokens generated and trained per step, and the memory of one training process.
    max_step_tokens: Annotated[int, Field(ge=1)] = 4 * 1024**2
    max_train_memory_bytes: Annotated[int, Field(ge=1)] = 80 * 1024**3
    # A team's stored files together (jobs.uploads); an upload past it answers 429.
    team_storage_bytes: Annotated[int, Field(ge=0)] = 10 * 1024**3
    # All of a request's headers together (names and values); over it answers 431.
    max_header_bytes: Annotated[int, Field(ge=4096)] = 32 * 1024

    default_pool: str = "default"
    pools: list[str] = ["default"]

    # Leases and the supervisor loop (seconds). A lease must outlive a few heartbeats.
    lease_ttl_s: Annotated[float, Field(gt=0)] = 60.0
    heartbeat_s: Annotated[float, Field(gt=0)] = 10.0
    poll_s: Annotated[float, Field(gt=0)] = 0.5
    stop_grace_s: Annotated[float, Field(gt=0)] = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    retry_backoff_s: Annotated[float, Field(ge=0)] = 10.0
    # A queued job whose message is older than this is dispatched again (lost message).
    redispatch_after_s: Annotated[float, Field(gt=0)] = 120.0
    reconcile_every_s: Annotated[float, Field(gt=0)] = 30.0
    device: str = "auto"

    # Limits on one job's run, so that no job holds a worker forever (worker.supervisor). A
    # run that completes no step and enters no new phase for step_timeout_s (a hung
    # grader, a stuck collective), or whose attempts together have run max_job_runtime_s,
    # is killed and failed without a retry (codes `step_timeout`, `max_runtime_exceeded`).
    step_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    max_job_runtime_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    # The training process' address-space limit (RLIMIT_AS) in MiB; 0 means none. Running
    # out fails the job at once (`out_of_memory`). Off by default: CUDA and vLLM reserve far
    # more address space than they use; see worker.memory.
    train_memory_limit_mb: Annotated[int, Field(ge=0)] = 0

    # Sharing the pools (jobs.scheduling). A worker offers `worker_gpus` to one job at a
    # time and stops counting `worker_ttl_s` after its last heartbeat.
    worker_gpus: Annotated[int, Field(ge=1, le=1024)] = 1
    # A worker without GPUs runs each job's training as this many gloo ranks (FSDP2 under
    # torchrun's launcher, lco_core.distributed); a GPU worker runs a job asking for N GPUs
    # as N ranks, one per GPU.
    worker_cpu_ranks: Annotated[int, Field(ge=1, le=64)] = 1
    worker_ttl_s: Annotated[float, Field(gt=0)] = 60.0
    fair_share_window_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    # GPU-seconds charged per GPU a team holds now, so one pass interleaves teams by share.
    fair_share_charge_s: Annotated[float, Field(ge=0)] = 600.0
    # A waiting job gains one priority level per this many seconds (no starvation).
    priority_aging_s: Annotated[float, Field(gt=0)] = 3600.0
    # What a run is assumed to take before the pool has finished any (queue ETAs).
    default_job_duration_s: Annotated[float, Field(gt=0)] = 1800.0

    # Abuse limits: requests per key (token bucket: sustained rate and burst), and how long
    # an Idempotency-Key's first response is kept for replay.
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 1200
    rate_limit_burst: Annotated[int, Field(ge=1)] = 300
    idempotency_ttl_s: Annotated[float, Field(gt=0)] = 24 * 3600.0
    # How long a request is presumed alive once its body is read. An Idempotency-Key
    # reservation older than this whose response was never stored belongs to a request
    # that died (process killed), and stops answering its retries 409. 120 s: well above
    # the slowest request (validating a full-size upload), yet a client retrying with
    # back-off gets through within minutes rather than after idempotency_ttl_s.
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    # Open Server-Sent Event streams (each polls the database every second), counted per
    # API process (api.stream_slots): per API key, and in total; one more answers 429.
    max_streams_per_key: Annotated[int, Field(ge=1)] = 8
    max_streams_total: Annotated[int, Field(ge=1)] = 256

    # How long an API process may reuse what it read (0: never). An authenticated key: a key
    # revoked by another process stops working within this (this process's own revocations
    # at once). A queue plan (queued jobs' place and ETA): other processes' changes show
    # within this. See jobs.auth.AuthCache and jobs.queue.QueueSlots.
    auth_cache_s: Annotated[float, Field(ge=0, le=2)] = 1.0
    queue_cache_s: Annotated[float, Field(ge=0, le=10)] = 1.0

    # FastAPI's /docs and /redoc pages, which load Swagger UI / ReDoc from a CDN into this
    # origin (see api.app). Off by default; /openapi.json is always served.
    api_docs: bool = False

    # The HMAC key of signed download links (jobs.links). Unset: a random one generated once
    # and kept in data_dir/link_secret (0600), which every API process sharing data_dir reads,
    # so links survive restarts. Set it when API processes do not share data_dir.
    link_secret: Annotated[SecretStr | None, Field(min_length=32)] = None

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.environment == "production":
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ValueError("production needs LCO_DATABASE_URL pointing at PostgreSQL")
            if not self.broker_url or self.broker_url.startswith(EMBEDDED_BROKER):
                raise ValueError("production needs LCO_BROKER_URL pointing at Redis")
        if self.default_pool not in self.pools:
            raise ValueError(f"default_pool {self.default_pool!r} is not in pools")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lco.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or EMBEDDED_BROKER

    def broker_transport_options(self) -> dict[str, Any]:
        """The embedded filesystem broker keeps its messages under data_dir."""
        if not self.effective_broker_url.startswith(EMBEDDED_BROKER):
            # Redis: a job message can wait behind long jobs; the DB row is the truth anyway.
            return {"visibility_timeout": 24 * 3600}
        root = (self.data_dir / "broker").resolve()
        return {
            "data_folder_in": str(root / "queue"),
            "data_folder_out": str(root / "queue"),
            "control_folder": str(root / "control"),
            "processed_folder": str(root / "processed"),
            "store_processed": False,
        }

    def ensure_dirs(self) -> None:
        """Create data_dir and the embedded broker's folders (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for key, value in self.broker_transport_options().items():
            if "folder" in key:
                Path(value).mkdir(parents=True, exist_ok=True)

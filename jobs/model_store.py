"""The model registry: the base models jobs start from, and the store that holds them.

    data_dir/models/<name>/      a plain Hugging Face dir (see lco_core.model_import)

`lco-tiny` is built in: it ships with the package, every team sees it and nobody can remove
it (the training process finds it itself). Operators add base models with
`lco models import` (`import_into_store`) and take them away with `lco models remove`
(`remove_from_store`); each is a `models` row plus its store entry. Names are lowercase
(`[a-z0-9][a-z0-9._-]{0,63}`): never a path, never `ft:...`.

A team's fine-tuned models are not rows here: they are its succeeded jobs'
`fine_tuned_model`s (`TeamScope.fine_tuned_models`), and deleting one marks its job
(`delete_fine_tuned_model`). `team_models` is what `GET /v1/models` shows a team.

Never imports lco_core (the API process loads this module): the CLI hands
`import_into_store` the converter, `lco_core.model_import.import_model`.

    row = import_into_store(sessions, settings, Path("smol.gguf"), "smol", importer=import_model)
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import transaction
from jobs.errors import Conflict, Forbidden, InvalidRequest, NotFound
from jobs.ids import utcnow
from jobs.models import Job, RegisteredModel
from jobs.scope import TeamScope
from jobs.settings import Settings
from jobs.states import TERMINAL
from lco_spec.step_budget import ModelShape

# Built-in base models and when they were made (the `created` the Models API shows).
BUILTIN_MODELS: dict[str, datetime] = {"lco-tiny": datetime(2026, 11, 25, tzinfo=UTC)}
SYSTEM_OWNER = "system"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# How many job ids an "in use" error names.
_SHOWN_JOBS = 10

Progress = Callable[[str], None]


class ImportedInfo(Protocol):
    """What the converter reports (`lco_core.model_import.ImportedModel` has these)."""

    @property
    def source(self) -> str: ...
    @property
    def source_format(self) -> str: ...
    @property
    def source_sha256(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def parameters(self) -> int: ...
    @property
    def dtype(self) -> str: ...


class Importer(Protocol):
    """`lco_core.model_import.import_model`: writes `dest` whole or not at all."""

    def __call__(
        self, source: Path, dest: Path, *, dtype: str = ..., progress: Progress | None = ...
    ) -> ImportedInfo: ...


@dataclass(frozen=True)
class ModelEntry:
    """A model as the Models API lists it."""

    id: str
    created_at: datetime
    owned_by: str
    # A LoRA job's model is an adapter on the model that job started from (`lora_base`).
    adapter_base: str | None = None


def check_model_name(name: str) -> str:
    """`name` if a base model may be imported under it; `InvalidRequest` saying why not."""
    if name in BUILTIN_MODELS:
        raise InvalidRequest(
            f"{name!r} is the name of a built-in model", param="name", code="invalid_model_name"
        )
    if not _NAME.match(name):
        raise InvalidRequest(
            f"invalid model name {name!r}: 1-64 lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (no '/' or ':': never a path or an 'ft:' name)",
            param="name",
            code="invalid_model_name",
        )
    return name


class ModelStore:
    """Path arithmetic for the store of one data dir; creates nothing."""

    def __init__(self, settings: Settings):
        self.data_dir = settings.data_dir.resolve()
        self.root = self.data_dir / "models"

    def entry(self, name: str) -> Path:
        return self.root / check_model_name(name)

    def path_of(self, row: RegisteredModel) -> Path:
        """The entry of a registered model (its stored path, refused if it leaves the store)."""
        path = (self.data_dir / row.path).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"model {row.id}: {row.path} is outside the model store")
        return path

    def stored_path(self, entry: Path) -> str:
        return str(entry.relative_to(self.data_dir))


# -- base models -----------------------------------------------------------------------------
def registered_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModel | None:
    """The row of an imported base model. `lock` (PostgreSQL: FOR SHARE) holds off its
    removal until the caller commits, so a job never starts on a model being removed."""
    stmt = select(RegisteredModel).where(RegisteredModel.id == name)
    if lock:
        stmt = stmt.with_for_update(read=True)
    return session.scalar(stmt)


def is_base_model(session: Session, name: str, *, lock: bool = False) -> bool:
    return name in BUILTIN_MODELS or registered_model(session, name, lock=lock) is not None


def registered_models(session: Session) -> Sequence[RegisteredModel]:
    return session.scalars(select(RegisteredModel).order_by(RegisteredModel.created_at)).all()


def base_model_path(session: Session, settings: Settings, name: str) -> Path | None:
    """The store entry of an imported base model; None for a built-in one (or a name that is
    not registered), which the training process resolves by name."""
    row = registered_model(session, name)
    return None if row is None else ModelStore(settings).path_of(row)


def model_shape(session: Session, settings: Settings, name: str) -> ModelShape | None:
    """The shape of base model `name` from its entry's `config.json`, for the submission's
    step estimate (`lco_spec.step_budget`); None for the built-in model or an entry whose
    config cannot be read (the trainer then reports what is wrong with it)."""
    path = base_model_path(session, settings, name)
    if path is None:
        return None
    try:
        return ModelShape.from_config(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unfinished_jobs_on_base(session: Session, name: str) -> list[str]:
    """Ids of every team's jobs, not yet finished, that train from `name` (directly or from
    a fine-tuned model of it: `base_model` carries through)."""
    stmt = select(Job.id).where(
        Job.base_model == name, Job.status.not_in([s.value for s in TERMINAL])
    )
    return list(session.scalars(stmt.order_by(Job.pk)))


def _in_use(what: str, job_ids: list[str]) -> Conflict:
    shown = ", ".join(job_ids[:_SHOWN_JOBS])
    more = f" and {len(job_ids) - _SHOWN_JOBS} more" if len(job_ids) > _SHOWN_JOBS else ""
    return Conflict(
        f"{what} is in use by {len(job_ids)} unfinished fine-tuning job(s): {shown}{more}; "
        "cancel them or wait until they finish",
        param="model",
        code="model_in_use",
    )


def import_into_store(
    sessions: sessionmaker[Session],
    settings: Settings,
    source: Path,
    name: str,
    *,
    importer: Importer,
    dtype: str = "float32",
    progress: Progress | None = None,
) -> RegisteredModel:
    """Convert `source` into the store as base model `name` and register it.

    A taken name is refused before anything is converted. This owns its transactions (one
    short one to check the name, one to insert the row) rather than taking the caller's: a
    conversion takes minutes, and an open write transaction on SQLite would hold up every
    other writer (the API, the workers) as long. The converter writes the entry whole or
    not at all; if the row then cannot be inserted (a race for the name), the entry goes.
    """
    store = ModelStore(settings)
    dest = store.entry(name)
    with transaction(sessions) as session:
        if registered_model(session, name) is not None:
            raise _taken(name)
    if dest.exists():
        raise Conflict(
            f"{dest} exists but is no registered model (left by an interrupted import or "
            "removal); delete it and import again",
            param="name",
            code="model_exists",
        )
    try:
        info = importer(source, dest, dtype=dtype, progress=progress)
    except OSError as exc:
        # Another import of the name renamed its entry into place first.
        if isinstance(exc, FileExistsError) or exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _taken(name) from None
        raise
    row = RegisteredModel(
        id=name,
        created_at=utcnow(),
        owned_by=SYSTEM_OWNER,
        path=store.stored_path(dest),
        source=info.source,
        source_format=info.source_format,
        source_sha256=info.source_sha256,
        architecture=info.architecture,
        model_type=info.model_type,
        parameters=info.parameters,
        dtype=info.dtype,
    )
    try:
        with transaction(sessions) as session:
            session.add(row)
    except IntegrityError:
        _discard(dest)
        raise _taken(name) from None
    except BaseException:
        _discard(dest)
        raise
    return row


def _taken(name: str) -> Conflict:
    return Conflict(
        f"a base model named {name!r} already exists (`lco models remove {name}` first)",
        param="name",
        code="model_exists",
    )


def remove_from_store(sessions: sessionmaker[Session], settings: Settings, name: str) -> None:
    """Unregister base model `name` and delete its entry; refused while unfinished jobs use
    it (their ids are in the error). Owns its transaction: the entry is deleted only after
    the row's removal has committed."""
    if name in BUILTIN_MODELS:
        raise InvalidRequest(f"{name} is built in and cannot be removed", param="model")
    with transaction(sessions) as session:
        # FOR UPDATE waits for job submissions holding the row (FOR SHARE), then sees them.
        row = session.scalar(
            select(RegisteredModel).where(RegisteredModel.id == name).with_for_update()
        )
        if row is None:
            raise NotFound(f"no base model named {name!r}", param="model", code="model_not_found")
        users = unfinished_jobs_on_base(session, name)
        if users:
            raise _in_use(f"base model {name}", users)
        entry = ModelStore(settings).path_of(row)
        session.delete(row)
    _discard(entry)


def _discard(entry: Path) -> None:
    """Delete a store entry: first renamed aside, so a removal cut short never leaves a
    half-deleted dir under a model's name."""
    trash = entry.with_name(f".{entry.name}.removing-{secrets.token_hex(4)}")
    try:
        os.replace(entry, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# -- what a team sees ------------------------------------------------------------------------
def team_models(scope: TeamScope) -> list[ModelEntry]:
    """Every base model (built-in, then imported, oldest first), then the team's own
    fine-tuned models."""
    base = [ModelEntry(name, created, SYSTEM_OWNER) for name, created in BUILTIN_MODELS.items()]
    base += [
        ModelEntry(row.id, row.created_at, row.owned_by) for row in registered_models(scope.session)
    ]
    return base + [_fine_tuned_entry(job) for job in scope.fine_tuned_models()]


def team_model(scope: TeamScope, name: str) -> ModelEntry:
    """A base model or the team's own fine-tuned model; `NotFound` for anything else (the
    same answer whether or not another team has a model of that name)."""
    if name in BUILTIN_MODELS:
        return ModelEntry(name, BUILTIN_MODELS[name], SYSTEM_OWNER)
    row = registered_model(scope.session, name)
    if row is not None:
        return ModelEntry(row.id, row.created_at, row.owned_by)
    job = scope.fine_tuned_model(name)
    if job is None:
        raise _no_model(name)
    return _fine_tuned_entry(job)


def delete_fine_tuned_model(scope: TeamScope, name: str) -> None:
    """Delete the team's fine-tuned model `name` (the caller commits): the name stops
    resolving and leaves the list; the job, its checkpoints and their files stay. Base
    models are the operators' (`Forbidden`); a model unfinished jobs train from, `Conflict`."""
    if is_base_model(scope.session, name):
        raise Forbidden(
            f"{name} is a base model: the service's operators manage base models "
            "(`lco models remove`)",
            param="model",
            code="permission_denied",
        )
    job = scope.fine_tuned_model(name, lock="update")
    if job is None:
        raise _no_model(name)
    users = scope.unfinished_jobs_on_model(name)
    if users:
        raise _in_use(f"model {name}", users)
    job.fine_tuned_model_deleted_at = utcnow()


def _fine_tuned_entry(job: Job) -> ModelEntry:
    assert job.fine_tuned_model is not None
    # The owner as the job object names it (`organization_id`).
    return ModelEntry(
        job.fine_tuned_model, job.finished_at or job.created_at, job.team_id, lora_base(job)
    )


def job_lora(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A stored job spec's LoRA settings (`hyperparameters.lora`), or None for a full
    fine-tune."""
    method = spec.get("method") or {}
    block = method.get(method.get("type", "supervised")) or {}
    lora = (block.get("hyperparameters") or {}).get("lora")
    return lora if isinstance(lora, dict) else None


def lora_base(job: Job) -> str | None:
    """The model a LoRA job's adapter applies to (the job's starting model, itself perhaps
    a fine-tuned one); None for a full fine-tune."""
    return job.model if job_lora(job.spec) is not None else None


def _no_model(name: str) -> NotFound:
    return NotFound(
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )

"""The model registry: `lco models import|list|remove` (server-side CLI) and OpenAI's Models
API (`/v1/models`, through the official SDK), and which models a job may name.

Most tests import the built-in lco-tiny's dir (2 MB) under another name, in-process;
`test_the_real_gguf_imports_end_to_end_through_the_cli` converts SmolLM2's GGUF in a real
`lco` process (~30 s) and `test_a_live_service_trains_on_an_imported_model` runs a job on an
imported model through `lco serve`.

    .venv/bin/pytest tests/test_models_registry.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import BadRequestError, ConflictError, NotFoundError, OpenAI, PermissionDeniedError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main as lco_main
from jobs.auth import get_team_by_name
from jobs.db import make_engine, make_session_factory, transaction
from jobs.errors import Conflict, InvalidRequest
from jobs.ids import new_id, utcnow
from jobs.lifecycle import model_name
from jobs.model_store import ModelStore, import_into_store, registered_models
from jobs.models import Checkpoint, Job, RegisteredModel
from jobs.settings import Settings
from jobs.states import JobStatus
from lco_core.model_import import ModelImportError, import_model, packaged_gguf
from tests.job_rows import job_row
from tests.service_fixtures import (
    ROOT,
    ApiClient,
    LiveService,
    lco_cli,
    settings_env,
    sft_body,
    sft_lines,
    wait_for_job,
)
from worker.context import WorkerContext
from worker.job_info import load_job_info

COPY = "tiny-copy"


# -- helpers ---------------------------------------------------------------------------------
def _sessions(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings))


def _store(settings: Settings) -> list[str]:
    """Everything in the store dir, temp and hidden dirs included."""
    root = ModelStore(settings).root
    return sorted(os.listdir(root)) if root.exists() else []


def _registered(settings: Settings) -> list[RegisteredModel]:
    with transaction(_sessions(settings)) as session:  # closed: SQLite has one writer
        return list(registered_models(session))


def _import(settings: Settings, source: Path, name: str = COPY) -> RegisteredModel:
    return import_into_store(_sessions(settings), settings, source, name, importer=import_model)


def _never(*_args: Any, **_kw: Any) -> Any:
    raise AssertionError("the source was converted")


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """`lco ARGS` in this process against the test's database: (status, stdout, stderr)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"LCO_{name.upper()}", raising=False)
    monkeypatch.setenv("LCO_DATA_DIR", str(sqlite_settings.data_dir))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = lco_main(list(args))
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


def _error_line(status: int, err: str) -> str:
    """The one error line of a failed command (after the `database:` line), no traceback."""
    assert status == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _fine_tuned(settings: Settings, team: str, base: str = "lco-tiny") -> str:
    """A succeeded job of `team` on `base` with its final checkpoint: its model's name."""
    with transaction(_sessions(settings)) as session:
        row = get_team_by_name(session, team)
        job = job_row(row.id, base_model=base, model=base, status=JobStatus.SUCCEEDED)
        job.finished_at = utcnow()
        job.fine_tuned_model = model_name(base, row.name, None, job.id)
        ckpt = Checkpoint(
            id=new_id("ftckpt"),
            job_id=job.id,
            team_id=row.id,
            step_number=1,
            metrics={},
            rel_path="checkpoints/step-1",
            fine_tuned_model_checkpoint=f"{job.fine_tuned_model}:ckpt-step-1",
        )
        job.final_checkpoint_id = ckpt.id
        session.add(job)
        session.flush()
        session.add(ckpt)
        return job.fine_tuned_model


def _sdk(api: ApiClient, key: str) -> OpenAI:
    """The official SDK, served in-process by the test client (same routing as a server)."""
    return OpenAI(
        base_url="http://testserver/v1", api_key=key, http_client=api.client, max_retries=0
    )


def _submit(api: ApiClient, model: str, headers: dict[str, str] | None = None) -> Any:
    headers = headers or api.headers
    file_id = api.upload(sft_lines(), headers=headers).json()["id"]
    return api.post(
        "/v1/fine_tuning/jobs", json={**sft_body(file_id), "model": model}, headers=headers
    )


def _no_model(name: str) -> dict[str, Any]:
    return {
        "message": f"The model '{name}' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def _not_for_training(name: str) -> dict[str, Any]:
    return {
        "message": f"The model `{name}` does not exist or is not available for fine-tuning",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_imports_lists_and_removes_a_model(
    cli: Cli, sqlite_settings: Settings, tiny_model_path: Path
) -> None:
    status, out, err = cli("models", "import", str(tiny_model_path), "--name", COPY)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"copying {tiny_model_path}"
    assert "checking that the stored model loads" in lines
    [row] = _registered(sqlite_settings)
    assert lines[-1] == (
        f"imported {COPY}: Qwen2ForCausalLM, {row.parameters:,} parameters (float32, from hf_dir)"
    )
    assert _store(sqlite_settings) == [COPY]
    entry = ModelStore(sqlite_settings).root / COPY
    assert (entry / "config.json").is_file() and (entry / "lco_import.json").is_file()

    status, out, _ = cli("models", "list", "--json")
    listed = {m["id"]: m for m in json.loads(out)}
    assert listed["lco-tiny"]["builtin"] is True
    assert listed[COPY] | {"created_at": None} == {
        "id": COPY,
        "created_at": None,
        "owned_by": "system",
        "builtin": False,
        "path": str(entry),
        "source": str(tiny_model_path),
        "source_format": "hf_dir",
        "architecture": "Qwen2ForCausalLM",
        "model_type": "qwen2",
        "parameters": row.parameters,
        "dtype": "float32",
    }
    status, out, _ = cli("models", "list")
    assert out.splitlines()[0].split() == ["lco-tiny", "built", "in"]
    assert out.splitlines()[1].startswith(f"{COPY} ") and str(entry) in out

    # A taken name is refused before anything is converted (no progress lines).
    status, out, err = cli("models", "import", str(tiny_model_path), "--name", COPY)
    assert _error_line(status, err) == (
        f"error: a base model named '{COPY}' already exists (`lco models remove {COPY}` first)"
    )
    assert out == "" and _store(sqlite_settings) == [COPY]

    status, out, err = cli("models", "remove", COPY)
    assert (status, out) == (0, f"removed base model {COPY}\n"), err
    assert _store(sqlite_settings) == [] and _registered(sqlite_settings) == []
    status, out, err = cli("models", "list", "--json")
    assert status == 0, err
    assert [m["id"] for m in json.loads(out)] == ["lco-tiny"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("lco-tiny", "error: 'lco-tiny' is the name of a built-in model"),
        ("Tiny", "error: invalid model name 'Tiny': "),
        ("a/b", "error: invalid model name 'a/b': "),
        ("../up", "error: invalid model name '../up': "),
        ("ft:lco-tiny:x::y", "error: invalid model name 'ft:lco-tiny:x::y': "),
        ("x" * 65, "error: invalid model name 'xxxx"),
    ],
)
def test_cli_refuses_bad_names_before_converting(
    cli: Cli, sqlite_settings: Settings, tiny_model_path: Path, name: str, message: str
) -> None:
    status, out, err = cli("models", "import", str(tiny_model_path), "--name", name)
    assert _error_line(status, err).startswith(message)
    assert out == "" and _store(sqlite_settings) == []
    with pytest.raises(InvalidRequest):
        import_into_store(
            _sessions(sqlite_settings), sqlite_settings, tiny_model_path, name, importer=_never
        )


def test_cli_removes_neither_the_built_in_model_nor_an_unknown_one(cli: Cli) -> None:
    status, _, err = cli("models", "remove", "lco-tiny")
    assert _error_line(status, err) == "error: lco-tiny is built in and cannot be removed"
    status, _, err = cli("models", "remove", "nope")
    assert _error_line(status, err) == "error: no base model named 'nope'"


# -- bad sources: a clear error, nothing left in the store -----------------------------------
def _gguf(path: Path, arch: str, tensors: bool, tokenizer: bool) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch=arch)
    if arch == "llama":
        writer.add_block_count(1)
        writer.add_context_length(16)
        writer.add_embedding_length(8)
        writer.add_feed_forward_length(16)
        writer.add_head_count(2)
        writer.add_head_count_kv(2)
    if tokenizer:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(["<unk>", "<s>", "</s>", "a"])
        writer.add_token_scores([0.0, 0.0, 0.0, -1.0])
        writer.add_token_types([2, 3, 3, 1])
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    if tensors:
        writer.add_tensor("v.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _bad_source(kind: str, tmp: Path, tiny: Path) -> Path:
    if kind == "dir_without_config":
        path = tmp / "no-config"
        path.mkdir()
        for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (path / name).write_bytes((tiny / name).read_bytes())
        return path
    path = tmp / f"{kind}.gguf"
    if kind == "random_bytes_gguf":
        path.write_bytes(b"GGUF" + np.random.default_rng(0).bytes(4096))
    elif kind == "truncated_gguf":
        data = packaged_gguf().read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "clip_gguf":
        _gguf(path, "clip", tensors=True, tokenizer=False)
    elif kind == "llama_gguf_without_tensors":
        _gguf(path, "llama", tensors=False, tokenizer=True)
    elif kind == "not_a_model":
        path.write_text("hello\n")
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("dir_without_config", "has no config.json: not a Hugging Face model dir"),
        ("random_bytes_gguf", "could not be read as a language model"),
        ("truncated_gguf", "could not be read as a language model"),
        ("clip_gguf", "architecture clip is not supported"),
        ("llama_gguf_without_tensors", "has no weights for 12 of the model's tensors"),
        ("not_a_model", "is neither a model dir nor a GGUF file"),
        ("missing", "does not exist"),
    ],
)
def test_a_bad_source_is_refused_and_leaves_nothing(
    sqlite_settings: Settings, tmp_path: Path, tiny_model_path: Path, kind: str, says: str
) -> None:
    source = _bad_source(kind, tmp_path, tiny_model_path)
    with pytest.raises(ModelImportError) as caught:
        _import(sqlite_settings, source)
    assert str(source) in str(caught.value) and says in str(caught.value)
    assert _store(sqlite_settings) == []
    assert _registered(sqlite_settings) == []


def test_the_cli_reports_a_bad_source_in_one_line(
    cli: Cli, sqlite_settings: Settings, tmp_path: Path, tiny_model_path: Path
) -> None:
    source = _bad_source("random_bytes_gguf", tmp_path, tiny_model_path)
    status, out, err = cli("models", "import", str(source), "--name", "broken")
    line = _error_line(status, err)
    assert line.startswith(f"error: {source} could not be read as a language model: ")
    assert out.splitlines()[0] == f"hashing {source.name}"
    assert _store(sqlite_settings) == []


def test_an_insert_that_loses_the_race_for_the_name_removes_its_entry(
    sqlite_settings: Settings, tiny_model_path: Path
) -> None:
    def import_then_lose(source: Path, dest: Path, **kw: Any) -> Any:
        info = import_model(source, dest, **kw)
        with transaction(_sessions(sqlite_settings)) as session:  # the other import's row
            session.add(
                RegisteredModel(
                    id=COPY,
                    path="models/elsewhere",
                    source="x",
                    source_format="hf_dir",
                    source_sha256="0" * 64,
                    architecture="x",
                    model_type="x",
                    parameters=1,
                    dtype="float32",
                )
            )
        return info

    with pytest.raises(Conflict, match="already exists"):
        import_into_store(
            _sessions(sqlite_settings),
            sqlite_settings,
            tiny_model_path,
            COPY,
            importer=import_then_lose,
        )
    assert _store(sqlite_settings) == []


# -- jobs: which models they may name, and what the worker gives the training process -------
def test_a_job_names_only_base_models_and_its_own_fine_tuned_models(
    api: ApiClient, tiny_model_path: Path
) -> None:
    _import(api.settings, tiny_model_path)
    ours, theirs = _fine_tuned(api.settings, "team-a"), _fine_tuned(api.settings, "team-b")
    for model in ("lco-tiny", COPY, ours, f"{ours}:ckpt-step-1"):
        response = _submit(api, model)
        assert response.status_code == 200, (model, response.text)
    # A path (even the store's own entry), another team's model or its checkpoint, or a
    # model nobody has: the same 400, which says nothing about whether it exists elsewhere.
    nobody = theirs.replace("ftjob-", "ftjob-X")
    for model in (
        str(tiny_model_path),
        str(ModelStore(api.settings).root / COPY),
        "models/tiny-copy",
        theirs,
        f"{theirs}:ckpt-step-1",
        nobody,
        "Qwen/Qwen2.5-0.5B",
    ):
        response = _submit(api, model)
        assert response.status_code == 400, (model, response.text)
        assert response.json()["error"] == _not_for_training(model)


def test_the_worker_gives_a_job_its_base_models_store_entry(
    api: ApiClient, tiny_model_path: Path
) -> None:
    _import(api.settings, tiny_model_path)
    ctx = WorkerContext(api.settings)
    on_copy = _submit(api, COPY).json()["id"]
    info = load_job_info(ctx, on_copy)
    assert info.model_path == str(ModelStore(api.settings).root / COPY)
    assert info.model_name.startswith(f"ft:{COPY}:team-a::")
    # The built-in is resolved by the training process itself; a fine-tuned model is its
    # final checkpoint.
    assert load_job_info(ctx, _submit(api, "lco-tiny").json()["id"]).model_path is None
    from_ft = _submit(api, _fine_tuned(api.settings, "team-a", base=COPY)).json()["id"]
    path = load_job_info(ctx, from_ft).model_path
    assert path is not None and path.endswith("/checkpoints/step-1") and "/teams/" in path


def test_a_base_model_in_use_is_not_removed_and_the_error_names_the_jobs(
    api: ApiClient, cli: Cli, tiny_model_path: Path
) -> None:
    _import(api.settings, tiny_model_path)
    direct = _submit(api, COPY).json()["id"]
    # Another team's job from a fine-tuned model of it uses it too.
    theirs = _fine_tuned(api.settings, "team-b", base=COPY)
    indirect = _submit(api, theirs, headers=api.other_headers).json()["id"]
    status, _, err = cli("models", "remove", COPY)
    assert _error_line(status, err) == (
        f"error: base model {COPY} is in use by 2 unfinished fine-tuning job(s): "
        f"{direct}, {indirect}; cancel them or wait until they finish"
    )
    assert _store(api.settings) == [COPY]
    assert api.post(f"/v1/fine_tuning/jobs/{direct}/cancel").status_code == 200
    response = api.post(f"/v1/fine_tuning/jobs/{indirect}/cancel", headers=api.other_headers)
    assert response.status_code == 200
    status, _, err = cli("models", "remove", COPY)
    assert status == 0, err
    assert _store(api.settings) == []
    assert _submit(api, COPY).json()["error"] == _not_for_training(COPY)


# -- the Models API through the SDK ------------------------------------------------------------
def test_models_api_through_the_sdk(api: ApiClient, tiny_model_path: Path) -> None:
    row = _import(api.settings, tiny_model_path)
    ours, theirs = _fine_tuned(api.settings, "team-a"), _fine_tuned(api.settings, "team-b")
    client, other = _sdk(api, api.key), _sdk(api, api.other_key)
    with transaction(_sessions(api.settings)) as session:
        team_a = get_team_by_name(session, "team-a").id
        team_b = get_team_by_name(session, "team-b").id

    models = client.models.list().data
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("lco-tiny", "model", "system"),
        (COPY, "model", "system"),
        (ours, "model", team_a),
    ]
    assert models[1].created == int(row.created_at.timestamp())
    assert [(m.id, m.owned_by) for m in other.models.list().data] == [
        ("lco-tiny", "system"),
        (COPY, "system"),
        (theirs, team_b),
    ]

    # Ids with colons travel in one path segment.
    found = client.models.retrieve(ours)
    assert (found.id, found.owned_by) == (ours, team_a) and ":" in found.id
    assert client.models.retrieve(COPY).owned_by == "system"
    assert client.models.retrieve("lco-tiny").id == "lco-tiny"

    # Another team's model answers exactly as one that does not exist.
    nobody = theirs.replace("ftjob-", "ftjob-X")
    for name in (theirs, nobody, "gpt-4o"):
        for call in (client.models.retrieve, client.models.delete):
            with pytest.raises(NotFoundError) as caught:
                call(name)
            assert caught.value.body == _no_model(name), name

    # Base models are the operators': 403, and they stay.
    for name in ("lco-tiny", COPY):
        with pytest.raises(PermissionDeniedError) as denied:
            client.models.delete(name)
        assert denied.value.body["code"] == "permission_denied"  # type: ignore[index]
    assert _store(api.settings) == [COPY]

    deleted = client.models.delete(ours)
    assert (deleted.id, deleted.object, deleted.deleted) == (ours, "model", True)
    assert [m.id for m in client.models.list().data] == ["lco-tiny", COPY]
    with pytest.raises(NotFoundError):
        client.models.retrieve(ours)
    with pytest.raises(NotFoundError):
        client.models.delete(ours)
    file_id = client.files.create(file=("t.jsonl", sft_lines()), purpose="fine-tune").id
    with pytest.raises(BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=ours, training_file=file_id)
    assert refused.value.body == _not_for_training(ours)
    # Its job keeps its history.
    with transaction(_sessions(api.settings)) as session:
        job = session.scalar(select(Job).where(Job.fine_tuned_model == ours))
        assert job is not None and job.fine_tuned_model_deleted_at is not None
    assert [m.id for m in other.models.list().data] == ["lco-tiny", COPY, theirs]


def test_a_fine_tuned_model_an_unfinished_job_uses_is_not_deleted(api: ApiClient) -> None:
    ours = _fine_tuned(api.settings, "team-a")
    client = _sdk(api, api.key)
    job_id = _submit(api, ours).json()["id"]
    with pytest.raises(ConflictError) as caught:
        client.models.delete(ours)
    assert caught.value.body == {
        "message": f"model {ours} is in use by 1 unfinished fine-tuning job(s): {job_id}; "
        "cancel them or wait until they finish",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_in_use",
    }
    # Paused is unfinished too.
    client.fine_tuning.jobs.pause(job_id)
    with pytest.raises(ConflictError):
        client.models.delete(ours)
    client.fine_tuning.jobs.cancel(job_id)
    assert client.models.delete(ours).deleted is True


def test_only_succeeded_jobs_with_a_final_checkpoint_are_models(api: ApiClient) -> None:
    ours = _fine_tuned(api.settings, "team-a")
    with transaction(_sessions(api.settings)) as session:
        session.execute(
            update(Job).where(Job.fine_tuned_model == ours).values(final_checkpoint_id=None)
        )
    assert [m["id"] for m in api.get("/v1/models").json()["data"]] == ["lco-tiny"]
    assert api.get(f"/v1/models/{ours}").status_code == 404


# -- end to end --------------------------------------------------------------------------------
def test_the_real_gguf_imports_end_to_end_through_the_cli(sqlite_settings: Settings) -> None:
    """SmolLM2's Q4_1 GGUF, dequantized into the store by a real `lco` process (~30 s)."""
    gguf = packaged_gguf()
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "models", "import", str(gguf), "--name", "smollm2"],
        env=settings_env(sqlite_settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _store(sqlite_settings) == ["smollm2"]
    listed = json.loads(lco_cli(sqlite_settings, "models", "list", "--json"))
    assert [(m["id"], m.get("source_format"), m.get("model_type")) for m in listed] == [
        ("lco-tiny", None, None),
        ("smollm2", "gguf", "llama"),
    ]
    arch = listed[1]["architecture"]
    assert result.stdout.splitlines() == [
        f"hashing {gguf.name}",
        f"reading {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) and dequantizing it",
        "writing safetensors",
        "checking that the stored model loads",
        f"imported smollm2: {arch}, 134,515,008 parameters (float32, from gguf)",
    ]


@pytest.mark.e2e
def test_a_live_service_trains_on_an_imported_model(
    embedded: tuple[LiveService, str], tiny_model_path: Path
) -> None:
    """Imported while `lco serve` runs; a job on it trains from its store entry."""
    service, key = embedded
    lco_cli(service.settings, "models", "import", str(tiny_model_path), "--name", COPY)
    client = OpenAI(base_url=service.base_url, api_key=key, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["lco-tiny", COPY]

    file_id = client.files.create(file=("t.jsonl", sft_lines(8)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=COPY,
        training_file=file_id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"max_steps": 2, "batch_size": 4}},
        },
    )
    job = wait_for_job(client, job.id, {"succeeded"}, service)
    run = json.loads(
        next(
            (service.settings.data_dir / "teams").glob(f"*/jobs/{job.id}/run-attempt-1.json")
        ).read_text()
    )
    assert run["model_path"] == str(ModelStore(service.settings).root / COPY)
    assert job.fine_tuned_model and job.fine_tuned_model.startswith(f"ft:{COPY}:live::")
    assert client.models.retrieve(job.fine_tuned_model).owned_by == job.organization_id
    assert client.models.delete(job.fine_tuned_model).deleted is True
    assert [m.id for m in client.models.list().data] == ["lco-tiny", COPY]

"""The served OpenAPI document works for client generators: every `$ref` (and discriminator
mapping) resolves from the document's root, every operation has a unique, stable id
(OpenAI's where OpenAI has the operation), and openapi-python-client builds a client that
uploads a file and creates, lists and retrieves a job against the app.

    .venv/bin/pytest tests/test_openapi.py -q
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.openapi import hoist_inline_schemas
from tests.service_fixtures import ApiClient, sft_body, sft_lines

# OpenAI's operation ids (its published OpenAPI spec) for the operations it has.
OPENAI_IDS = {
    ("post", "/v1/files"): "createFile",
    ("get", "/v1/files"): "listFiles",
    ("get", "/v1/files/{file_id}"): "retrieveFile",
    ("delete", "/v1/files/{file_id}"): "deleteFile",
    ("get", "/v1/files/{file_id}/content"): "downloadFile",
    ("post", "/v1/fine_tuning/jobs"): "createFineTuningJob",
    ("get", "/v1/fine_tuning/jobs"): "listPaginatedFineTuningJobs",
    ("get", "/v1/fine_tuning/jobs/{job_id}"): "retrieveFineTuningJob",
    ("post", "/v1/fine_tuning/jobs/{job_id}/cancel"): "cancelFineTuningJob",
    ("post", "/v1/fine_tuning/jobs/{job_id}/pause"): "pauseFineTuningJob",
    ("post", "/v1/fine_tuning/jobs/{job_id}/resume"): "resumeFineTuningJob",
    ("get", "/v1/fine_tuning/jobs/{job_id}/events"): "listFineTuningEvents",
    ("get", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "listFineTuningJobCheckpoints",
    ("get", "/v1/models"): "listModels",
    ("get", "/v1/models/{model}"): "retrieveModel",
    ("delete", "/v1/models/{model}"): "deleteModel",
}
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _spec(api: ApiClient) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """(ref, where it is) for every `$ref` and discriminator mapping in `node`."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _refs(item, f"{where}/{i}")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value, where
            elif key == "discriminator" and isinstance(value, dict):
                for ref in (value.get("mapping") or {}).values():
                    yield ref, f"{where}/discriminator"
            else:
                yield from _refs(value, f"{where}/{key}")


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (RFC 6901) from the document's root; KeyError if it dangles."""
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                yield method, path, operation


def test_every_ref_resolves_from_the_document_root(api: ApiClient) -> None:
    spec = _spec(api)
    refs = list(_refs(spec))
    assert refs, "no refs at all: the walk is broken"
    dangling = []
    for ref, where in refs:
        try:
            _resolve(spec, ref)
        except (KeyError, IndexError, TypeError):
            dangling.append(f"{ref} at {where}")
    assert dangling == []
    assert "$defs" not in str(spec)  # no schema keeps local definitions


def test_job_create_body_is_a_named_component_with_the_job_spec(api: ApiClient) -> None:
    spec = _spec(api)
    body = spec["paths"]["/v1/fine_tuning/jobs"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert body["required"] is True
    assert schema == {"$ref": "#/components/schemas/CreateFineTuningJobRequest"}
    create = _resolve(spec, schema["$ref"])
    assert {"model", "training_file"} <= set(create["required"])
    assert {"validation_file", "suffix", "seed", "metadata", "method"} <= set(create["properties"])
    # The spec's Resources and the job object's Resources are different schemas: both kept.
    components = spec["components"]["schemas"]
    titles = [c.get("title", name) for name, c in components.items()]
    assert len(titles) == len(set(titles)), "two components share a title (class name)"


def test_every_operation_has_a_unique_stable_id_openais_where_it_has_one(api: ApiClient) -> None:
    spec = _spec(api)
    ids = {(method, path): op.get("operationId") for method, path, op in _operations(spec)}
    assert all(ids.values()), [k for k, v in ids.items() if not v]
    assert len(set(ids.values())) == len(ids), "duplicate operation ids"
    for key, expected in OPENAI_IDS.items():
        assert ids[key] == expected, key
    # FastAPI's default ids spell the path and method; ours never do.
    assert not [i for i in ids.values() if i and ("_v1_" in i or i.endswith(("_get", "_post")))]


def test_hoisting_renames_a_clash_and_reuses_an_equal_schema() -> None:
    mine = {"type": "object", "properties": {"gpus": {"type": "integer", "maximum": 64}}}
    body = {
        "title": "Create",
        "type": "object",
        "properties": {"resources": {"$ref": "#/$defs/Resources"}},
        "$defs": {"Resources": {"title": "Resources", **mine}},
    }

    def operation(schema: dict[str, Any]) -> dict[str, Any]:
        return {"requestBody": {"content": {"application/json": {"schema": schema}}}}

    spec = {
        "paths": {"/a": {"post": operation(dict(body))}, "/b": {"post": operation(dict(body))}},
        "components": {"schemas": {"Resources": {"title": "Resources", "type": "object"}}},
    }
    out = hoist_inline_schemas(spec)
    schemas = out["components"]["schemas"]
    assert set(schemas) == {"Resources", "CreateResources", "Create"}
    assert schemas["CreateResources"]["title"] == "CreateResources"
    assert schemas["Create"]["properties"]["resources"] == {
        "$ref": "#/components/schemas/CreateResources"
    }
    for path in ("/a", "/b"):
        media = out["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert media["schema"] == {"$ref": "#/components/schemas/Create"}


# -- a generated client --------------------------------------------------------------------------
def _generator() -> str:
    found = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("openapi-python-client is not installed (pip install -e '.[dev]')")
    return found


def test_openapi_python_client_builds_a_client_that_creates_lists_and_retrieves_a_job(
    api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = _generator()
    spec_path = tmp_path / "openapi.json"
    spec_path.write_bytes(api.client.get("/openapi.json").content)
    config = tmp_path / "config.yaml"
    # No post hooks: they would run ruff over the generated code, which proves nothing here.
    config.write_text(
        "project_name_override: lco_client\npackage_name_override: lco_client\npost_hooks: []\n"
    )
    out = tmp_path / "gen" / "lco_client"
    result = subprocess.run(
        [
            tool,
            "generate",
            "--path",
            str(spec_path),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    # The generator skips what it cannot parse with a warning, and exits 0 all the same.
    assert "will not be generated" not in log and "Unable to" not in log, log

    monkeypatch.syspath_prepend(str(tmp_path / "gen"))
    client_mod = importlib.import_module("lco_client.client")
    models = importlib.import_module("lco_client.models")
    types = importlib.import_module("lco_client.types")
    create_file = importlib.import_module("lco_client.api.files.create_file")
    create = importlib.import_module("lco_client.api.fine_tuning.create_fine_tuning_job")
    list_jobs = importlib.import_module(
        "lco_client.api.fine_tuning.list_paginated_fine_tuning_jobs"
    )
    retrieve = importlib.import_module("lco_client.api.fine_tuning.retrieve_fine_tuning_job")

    client = client_mod.AuthenticatedClient(base_url="http://testserver", token=api.key)
    # Served in-process: the test client is an httpx.Client, with the key the generated
    # client would have set on the one it builds.
    api.client.headers["Authorization"] = f"Bearer {api.key}"
    client.set_httpx_client(api.client)

    upload = create_file.sync(
        client=client,
        body=models.CreateFileBody(
            file=types.File(payload=sft_lines(), file_name="train.jsonl"), purpose="fine-tune"
        ),
    )
    assert isinstance(upload, models.FilePublic), upload
    assert upload.status == "processed"

    body = models.CreateFineTuningJobRequest.from_dict(
        {**sft_body(upload.id), "metadata": {"experiment": "A"}, "suffix": "gen"}
    )
    job = create.sync(client=client, body=body)
    assert isinstance(job, models.JobPublic), job
    assert job.id.startswith("ftjob-") and job.status == "queued"
    assert job.training_file == upload.id

    listed = list_jobs.sync(client=client, limit=5)
    assert isinstance(listed, models.JobsPublic), listed
    assert [j.id for j in listed.data] == [job.id]

    fetched = retrieve.sync(client=client, job_id=job.id)
    assert isinstance(fetched, models.JobPublic), fetched
    assert (fetched.id, fetched.user_provided_suffix) == (job.id, "gen")

    # A refused body parses as OpenAI's error envelope, not as a crash of the client.
    bad = create.sync_detailed(
        client=client, body=models.CreateFineTuningJobRequest.from_dict(sft_body("file-nope"))
    )
    assert bad.status_code in (400, 404), bad.content
    assert isinstance(bad.parsed, models.ErrorEnvelope)

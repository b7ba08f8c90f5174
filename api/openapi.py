"""The OpenAPI document (`/openapi.json`) that client generators can use: every `$ref`
resolves from the document's root, and every operation has a stable id.

    app = FastAPI(generate_unique_id_function=operation_id, ...)
    install_openapi(app)                     # after the routers are included
    @router.post("", openapi_extra=json_body(JobCreate, "CreateFineTuningJobRequest"))

FastAPI leaves two gaps that this module closes:

- A route that validates its JSON body itself (job creation runs `lco_spec`, so the API and
  `lco train` give the same errors) documents the body through `openapi_extra`. Pydantic
  writes that model's nested models under the schema's own `$defs`, with refs such as
  `#/$defs/Method` that resolve only inside that schema; generators resolve refs from the
  document's root and skip the endpoint. `install_openapi` moves every inline schema's
  `$defs` to `components/schemas` (renamed when a different schema holds the name) and
  the titled schema itself with them.
- FastAPI's default operation id (`create_job_v1_fine_tuning_jobs_post`) changes whenever a
  function is renamed, and becomes a generated client's method name. `OPERATION_IDS` names
  each operation once: OpenAI's own id where OpenAI has the operation (a client written
  against OpenAI's spec finds the same names), ours otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

_JOB = "/v1/fine_tuning/jobs/{job_id}"
_CHECKPOINT = f"{_JOB}/checkpoints/{{checkpoint_id}}"

# (method, path) -> operation id. OpenAI's ids come from its published OpenAPI spec.
OPERATION_IDS: dict[tuple[str, str], str] = {
    # Files (OpenAI's)
    ("POST", "/v1/files"): "createFile",
    ("GET", "/v1/files"): "listFiles",
    ("GET", "/v1/files/{file_id}"): "retrieveFile",
    ("DELETE", "/v1/files/{file_id}"): "deleteFile",
    ("GET", "/v1/files/{file_id}/content"): "downloadFile",
    # Fine-tuning jobs (OpenAI's)
    ("POST", "/v1/fine_tuning/jobs"): "createFineTuningJob",
    ("GET", "/v1/fine_tuning/jobs"): "listPaginatedFineTuningJobs",
    ("GET", _JOB): "retrieveFineTuningJob",
    ("POST", f"{_JOB}/cancel"): "cancelFineTuningJob",
    ("POST", f"{_JOB}/pause"): "pauseFineTuningJob",
    ("POST", f"{_JOB}/resume"): "resumeFineTuningJob",
    ("GET", f"{_JOB}/events"): "listFineTuningEvents",
    ("GET", f"{_JOB}/checkpoints"): "listFineTuningJobCheckpoints",
    ("POST", "/v1/fine_tuning/alpha/graders/run"): "runGrader",
    ("POST", "/v1/fine_tuning/alpha/graders/validate"): "validateGrader",
    # Models (OpenAI's)
    ("GET", "/v1/models"): "listModels",
    ("GET", "/v1/models/{model}"): "retrieveModel",
    ("DELETE", "/v1/models/{model}"): "deleteModel",
    # Extensions
    ("GET", f"{_JOB}/metrics"): "listFineTuningJobMetrics",
    ("GET", f"{_JOB}/samples"): "listFineTuningJobSamples",
    ("GET", f"{_JOB}/stream"): "streamFineTuningJob",
    ("GET", f"{_CHECKPOINT}/download"): "downloadFineTuningJobCheckpoint",
    ("POST", f"{_CHECKPOINT}/download_link"): "createFineTuningJobCheckpointDownloadLink",
    ("GET", "/v1/downloads/{token}"): "downloadWithLink",
    ("GET", "/v1/pools"): "listPools",
    ("GET", "/v1/pools/{pool}"): "retrievePool",
    ("GET", "/healthz"): "healthCheck",
    ("GET", "/livez"): "livenessCheck",
    ("GET", "/readyz"): "readinessCheck",
    ("GET", "/metrics"): "prometheusMetrics",
    # Administration (admin keys)
    ("GET", "/v1/admin/teams"): "adminListTeams",
    ("POST", "/v1/admin/teams"): "adminCreateTeam",
    ("GET", "/v1/admin/teams/{team_id}"): "adminRetrieveTeam",
    ("PATCH", "/v1/admin/teams/{team_id}"): "adminUpdateTeam",
    ("GET", "/v1/admin/teams/{team_id}/keys"): "adminListTeamKeys",
    ("POST", "/v1/admin/teams/{team_id}/keys"): "adminCreateTeamKey",
    ("DELETE", "/v1/admin/keys/{key_id}"): "adminRevokeKey",
    ("GET", "/v1/admin/jobs"): "adminListFineTuningJobs",
    ("GET", "/v1/admin/jobs/{job_id}"): "adminRetrieveFineTuningJob",
    ("POST", "/v1/admin/jobs/{job_id}/cancel"): "adminCancelFineTuningJob",
    ("POST", "/v1/admin/jobs/{job_id}/pause"): "adminPauseFineTuningJob",
    ("POST", "/v1/admin/jobs/{job_id}/resume"): "adminResumeFineTuningJob",
}


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function`: the table's id, else the endpoint's name in
    camelCase (a route added without an entry still gets an id that only its name changes)."""
    for method in sorted(route.methods or ()):
        if (found := OPERATION_IDS.get((method, route.path_format))) is not None:
            return found
    head, *rest = route.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_body(model: type[BaseModel], name: str) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself: the body documented as
    `model`, which `install_openapi` files as `components/schemas/<name>`."""
    schema = model.model_json_schema()
    schema["title"] = name
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (served as /openapi.json) hoist inline `$defs` into components."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_inline_schemas(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def hoist_inline_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Move each operation's inline body and response schemas that carry `$defs` into
    `components/schemas`, with their defs; refs are rewritten to match. In place."""
    components: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            bodies = [operation.get("requestBody", {})]
            bodies += list(operation.get("responses", {}).values())
            for body in bodies:
                for media in body.get("content", {}).values():
                    schema = media.get("schema")
                    if isinstance(schema, dict) and "$defs" in schema:
                        media["schema"] = _hoist(schema, components)
    return spec


_LOCAL_REF = "#/$defs/"
_COMPONENT_REF = "#/components/schemas/"


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """File `schema`'s `$defs` and `schema` itself (by its title) in `components`; a ref to it."""
    schema = dict(schema)
    defs: dict[str, Any] = schema.pop("$defs")
    owner = _identifier(str(schema.get("title") or "Body"))
    # A name held by a different schema (the API's own `Resources` beside the job spec's)
    # is renamed `<owner><name>`; renaming one def changes the defs that refer to it, so
    # repeat until nothing else collides. Each name is renamed at most once.
    names = {name: name for name in defs}
    changed = True
    while changed:
        changed = False
        for name, target in names.items():
            if target == name and _taken(components, name, _rewrite(defs[name], names)):
                names[name] = _free(components, owner + name, _rewrite(defs[name], names))
                changed = True
    for name, target in names.items():
        hoisted = _rewrite(defs[name], names)
        if target != name:
            # Generators name a class by the schema's title: two `Resources` would clash.
            hoisted["title"] = target
        components[target] = hoisted
    top = _rewrite(schema, names)
    title = schema.get("title")
    if not title:
        return top
    target = _identifier(str(title))
    if _taken(components, target, top):
        target = _free(components, target + "Body", top)
    components[target] = top
    return {"$ref": _COMPONENT_REF + target}


def _taken(components: dict[str, Any], name: str, schema: dict[str, Any]) -> bool:
    """`name` holds another schema (a renamed copy of this one differs only in its title)."""
    if name not in components:
        return False
    held = {k: v for k, v in components[name].items() if k != "title"}
    return held != {k: v for k, v in schema.items() if k != "title"}


def _free(components: dict[str, Any], name: str, schema: dict[str, Any]) -> str:
    candidate, n = name, 1
    while _taken(components, candidate, schema):
        n += 1
        candidate = f"{name}{n}"
    return candidate


def _identifier(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "", title) or "Body"


def _rewrite(node: Any, names: dict[str, str]) -> Any:
    """`node` with local refs (`$ref` values and discriminator mappings) pointed at components."""
    if isinstance(node, list):
        return [_rewrite(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = _rewrite_ref(value, names)
        elif (
            key == "discriminator"
            and isinstance(value, dict)
            and isinstance(value.get("mapping"), dict)
        ):
            # Pydantic writes a tagged union's mapping as refs too: `{"dpo": "#/$defs/..."}`.
            mapping = {tag: _rewrite_ref(ref, names) for tag, ref in value["mapping"].items()}
            out[key] = {**value, "mapping": mapping}
        else:
            out[key] = _rewrite(value, names)
    return out


def _rewrite_ref(ref: Any, names: dict[str, str]) -> Any:
    if not (isinstance(ref, str) and ref.startswith(_LOCAL_REF)):
        return ref
    name = ref[len(_LOCAL_REF) :]
    return _COMPONENT_REF + names.get(name, name)

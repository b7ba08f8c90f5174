"""docker-compose.yml cannot run here (no Docker engine): check it parses and describes the
production layout (API, workers, scheduler, PostgreSQL, Redis) with production settings."""

from __future__ import annotations

import yaml

from tests.service_fixtures import ROOT


def test_compose_file_describes_the_production_layout() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker-default", "scheduler", "postgres", "redis", "migrate"} <= set(services)
    for name in ("api", "worker-default", "scheduler", "migrate"):
        env = services[name]["environment"]
        assert env["LCO_ENVIRONMENT"] == "production"
        assert env["LCO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["LCO_BROKER_URL"].startswith("redis://")
    assert services["worker-default"]["command"][:2] == ["lco", "worker"]
    assert "api.app:create_app_from_env" in services["api"]["command"]

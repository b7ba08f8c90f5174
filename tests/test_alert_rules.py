"""deploy/alerts.yml, the example alert rules: Prometheus' rule-file shape (groups of rules,
each with alert, expr, a severity and a summary), and every `lco_*` metric an expression
names is one `/metrics` serves (scraped from an app with a queued and a running job, so the
per-job series exist)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobs.db import make_engine, make_session_factory
from jobs.leases import claim, fenced, record_metrics
from tests.service_fixtures import ROOT, STRING_CHECK, ApiClient, rl_lines


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_have_the_prometheus_shape() -> None:
    rules = _rules()
    assert len({r["alert"] for r in rules}) == len(rules) >= 5
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_rules_name_only_metrics_the_api_serves(api: ApiClient) -> None:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    running = api.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    api.post("/v1/fine_tuning/jobs", json=body)
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, running, owner="test", ttl_s=60)
    assert lease is not None
    with fenced(sessions, lease) as session:
        record_metrics(session, lease, 1, {"loss": 1.0, "total_steps": 2})
    api.client.get("/livez")
    served = set()
    for family in text_string_to_metric_families(api.client.get("/metrics").text):
        served |= {sample.name for sample in family.samples}
    named = {m for rule in _rules() for m in re.findall(r"\blco_[a-z_]+", rule["expr"])}
    assert named and named <= served, named - served

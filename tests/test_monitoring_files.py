"""Prometheus rules, prometheus.yml and the Grafana dashboard: every expression parses with a
real PromQL parser, names only metrics mumu exports and jobs prometheus.yml scrapes, and
every alert has a runbook section in docs/ops.md."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mumu.gateway.metrics import GatewayMetrics
from mumu.gateway.telemetry import Milestones
from mumu.ops.exporter import StatusCollector, exporter_registry
from mumu.ops.status import ConsumerFigures, SourceFigures, Status, StreamFigures
from mumu.runtime.metrics import StageMetrics

ROOT = Path(__file__).parents[1]
PROMETHEUS = ROOT / "infra" / "prometheus"
BUILTIN = {"up"}  # what Prometheus adds to every target


def exported_names() -> set[str]:
    """Every sample name the code exports, from its own registries with a child each."""
    stage = StageMetrics("ingest")
    stage.messages.labels("ingest", "r", "ack").inc()
    stage.latency.labels("ingest", "r").observe(0.1)
    stage.redeliveries.labels("ingest", "r").inc()
    stage.held.labels("ingest", "r", "database").set(1)
    stage.dead_letters.labels("ingest", "bad").inc()
    stage.dead_letter_failures.labels("ingest", "bad").inc()
    stage.consumer_lag.labels("ingest", "c").set(1)
    stage.ack_pending.labels("ingest", "c").set(1)
    stage.output_batches.labels("ingest", "atomic").inc()
    stage.permission_violations.labels("ingest", "x").inc()
    stage.model_seconds.labels("ingest", "m").inc()
    gateway = GatewayMetrics()
    gateway.requests.labels("/api/ask", "202").inc()
    gateway.request_seconds.labels("/api/ask").observe(0.1)
    gateway.permission_violations.labels("gateway", "x").inc()
    gateway.asks.labels("text").inc()
    gateway.rejected.labels("rate").inc()
    gateway.slow_clients.inc()
    gateway.deliveries.sent("answer.delta", time.time())
    Milestones(gateway.registry).latency.labels("text", "answer_final").observe(1)
    collector = StatusCollector()
    collector.update(Status(
        datetime.now(UTC),
        (StreamFigures("MUMU_DLQ", "stream", 1, 10, 100, 1000, 1, "new"),),
        (ConsumerFigures("MUMU_RESULTS", "persist", True, 1, 1, 0, 5, 2.0, 1),),
        (("ingest", 2),),
        (SourceFigures("MUMU_INGEST", "MUMU_INTAKE_ws", 0, 0.5, ""),),
    ))
    names: set[str] = set()
    for registry in (stage.registry, gateway.registry, exporter_registry(collector)):
        text = generate_latest(registry).decode()
        names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def functions(expr: str) -> set[str]:
    found: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.Call):
            found.add(node.func.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+ (.+)$", markdown, re.M)}


def scraped_jobs() -> set[str]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return {job["job_name"] for job in config["scrape_configs"]}


def test_every_rule_parses_and_names_only_exported_metrics_and_scraped_jobs() -> None:
    exported = exported_names() | BUILTIN
    jobs = scraped_jobs()
    for rule in rules():
        for selector in selectors(rule["expr"]):
            assert selector.name in exported, (rule["alert"], selector.name)
            for matcher in selector.matchers.matchers:
                if matcher.name == "job":
                    assert matcher.value in jobs, (rule["alert"], matcher.value)
        if "for" in rule:
            assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0


def test_the_metric_name_check_catches_a_typo() -> None:
    exported = exported_names() | BUILTIN
    names = {s.name for s in selectors("rate(mumu_stage_dead_leters_total[5m]) > 0")}
    assert not names <= exported
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(mumu_stage_dead_letters_total[5m])")


def test_every_alert_has_a_runbook_section_in_docs_ops() -> None:
    sections = anchors((ROOT / "docs" / "ops.md").read_text())
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/ops.md", url
        assert anchor in sections, (rule["alert"], anchor)
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]


def test_the_alerts_the_sre_needs_are_there_in_the_right_shape() -> None:
    by_name: dict[str, list[str]] = {}
    for rule in rules():
        by_name.setdefault(rule["alert"], []).append(rule["expr"])
    (gateway,) = by_name["MumuGatewayDown"]
    assert {s.name for s in selectors(gateway)} == {"up"}
    (lag,) = by_name["MumuConsumerLagGrowing"]
    assert functions(lag) & {"deriv", "rate", "delta", "increase"}, "a derivative, not a level"
    assert "mumu_jetstream_consumer_pending" in {s.name for s in selectors(lag)}
    (full,) = by_name["MumuStreamFilling"]
    assert re.search(r"mumu_jetstream_stream_fullness_ratio\s*>\s*0\.8\b", full)
    (dead,) = by_name["MumuDeadLetterRate"]
    assert "rate" in functions(dead)
    slow = by_name["MumuEndToEndSlow"]
    assert {m for e in slow for m in re.findall(r'kind="(\w+)"', e)} == {"text", "audio"}
    for expr in slow:
        assert "histogram_quantile" in functions(expr) and "0.99" in expr
        assert {s.name for s in selectors(expr)} == {"mumu_e2e_latency_seconds_bucket"}


def test_prometheus_scrapes_the_gateway_the_stages_and_the_one_exporter() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    for rule_file in config["rule_files"]:
        assert f"./infra/prometheus/{Path(rule_file).name}:{rule_file}:ro" in mounts
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"mumu-gateway", "mumu-stages", "mumu-exporter"}
    (exporter,) = jobs["mumu-exporter"]["static_configs"][0]["targets"]
    host, port = exporter.split(":")
    command = compose["services"][host]["command"]
    assert command[:1] == ["exporter"] and command[command.index("--port") + 1] == port
    (gateway,) = jobs["mumu-gateway"]["static_configs"][0]["targets"]
    assert gateway.split(":")[0] in compose["services"]
    names = jobs["mumu-stages"]["dns_sd_configs"][0]["names"]
    assert all(name in compose["services"] for name in names)


def test_the_dashboard_has_the_sre_panels_and_valid_queries() -> None:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "mumu-dashboard.json").read_text())
    exported = exported_names() | BUILTIN
    rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert {"Gateway", "WebSockets", "End-to-end latency", "Streams and consumers",
            "Dead letters"} <= rows
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = {s.name for s in selectors(target["expr"])}
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    assert {"mumu_gateway_websockets", "mumu_e2e_latency_seconds_bucket",
            "mumu_jetstream_stream_fullness_ratio", "mumu_stage_dead_letters_total",
            "mumu_gateway_requests_total"} <= used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_grafana_loads_the_dashboard_from_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}  # container: host
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"].split("//")[1].split(":")[0] in compose["services"]
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "mumu.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = [host for container, host in mounts.items()
                  if container.startswith(folder + "/")]
    assert dashboards == ["./infra/grafana/mumu-dashboard.json"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]  # loopback only

"""The chart's worker metrics: the port on every worker pod (env, annotations, NetworkPolicy), the optional
PodMonitor, and the workers' Grafana dashboard, whose queries name only series that are exported."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

from helm_support import CHART, RELEASE, Manifest, by_kind, container_env

from mediaflow.api.metrics import Metrics
from mediaflow.common import metrics as worker_metrics

WORKERS = [f"{RELEASE}-transcriber", f"{RELEASE}-compositor", f"{RELEASE}-compositor-heavy"]


def _exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (worker_metrics.REGISTRY, Metrics().registry):
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            names |= {family.name + suffix for suffix in suffixes}
    return names


def _worker_deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    deployments = by_kind(manifests, "Deployment")
    return {name: deployments[name] for name in WORKERS if name in deployments}


def test_every_worker_pod_serves_metrics(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["default"]
    configmaps = by_kind(manifests, "ConfigMap")
    workers = _worker_deployments(manifests)
    assert len(workers) == 3
    for name, deployment in workers.items():
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"], name
        env = container_env(container, configmaps)
        assert env["MEDIAFLOW_WORKER_METRICS_PORT"] == "9464" and env["MEDIAFLOW_WORKER_METRICS_HOST"] == "0.0.0.0"
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9464"
    ingress = by_kind(manifests, "NetworkPolicy")[f"{RELEASE}-workers"]["spec"]["ingress"]
    # the default-deny keeps the port closed until workers.metrics.from names who may scrape
    assert not [rule for rule in ingress if {"port": 9464, "protocol": "TCP"} in rule["ports"]]
    assert "PodMonitor" not in {m["kind"] for m in manifests}  # off by default


def test_pod_monitor_and_scrape_sources(render: Callable[..., list[Manifest]], helm: str) -> None:
    refused = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", "workers.metrics.podMonitor.enabled=true"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "needs workers.metrics.from" in refused.stderr
    manifests = render(
        set_values={
            "workers.metrics.podMonitor.enabled": "true",
            "workers.metrics.podMonitor.labels.release": "kube-prometheus-stack",
            "workers.metrics.from[0].namespaceSelector.matchLabels.team": "monitoring",
        }
    )
    [monitor] = by_kind(manifests, "PodMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    selector = {e["key"]: e["values"] for e in monitor["spec"]["selector"]["matchExpressions"]}
    assert selector["app.kubernetes.io/component"] == ["transcriber", "compositor", "compositor-heavy"]
    ingress = by_kind(manifests, "NetworkPolicy")[f"{RELEASE}-workers"]["spec"]["ingress"]
    [scrape] = [rule for rule in ingress if rule["ports"] == [{"port": 9464, "protocol": "TCP"}]]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]


def test_metrics_off(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(set_values={"workers.metrics.port": "-1", "workers.metrics.podMonitor.enabled": "true"})
    for deployment in _worker_deployments(manifests).values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert [p["name"] for p in container["ports"]] == ["grpc"]
        assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]
        assert {"name": "MEDIAFLOW_WORKER_METRICS_PORT", "value": "-1"} in container["env"]
    assert "PodMonitor" not in {m["kind"] for m in manifests}
    assert f"{RELEASE}-worker-dashboard" not in by_kind(manifests, "ConfigMap")


def test_worker_dashboard_queries_exported_series(rendered: dict[str, list[Manifest]]) -> None:
    configmap = by_kind(rendered["default"], "ConfigMap")[f"{RELEASE}-worker-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["mediaflow-workers.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bmediaflow_[a-z0-9_]+", expr)}
    known = _exported_names()
    assert used <= known, f"series nobody exports: {sorted(used - known)}"
    # every worker family shows on the dashboard
    assert {
        "mediaflow_worker_queue_wait_seconds_bucket",
        "mediaflow_worker_stage_duration_seconds_bucket",
        "mediaflow_worker_jobs_total",
        "mediaflow_worker_job_retries_total",
        "mediaflow_transcriber_rtf_bucket",
        "mediaflow_transcriber_model_load_seconds",
        "mediaflow_render_media_seconds_total",
        "mediaflow_webhook_deliveries_total",
    } <= used
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])

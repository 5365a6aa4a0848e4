"""Helpers of the chart tests: paths, value sets, manifest lookups, strict CRD schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "mediaflow"
SCHEMAS = ROOT / "tests" / "fixtures" / "k8s-schemas"
INSTALLER = ROOT / "scripts" / "install-helm.sh"
# Rendered manifests are checked against this Kubernetes version's schemas (kubectl v1.35 is what the
# test setup installs; native gRPC probes need >= 1.27).
K8S_VERSION = "1.35.0"
RELEASE = "mediaflow"
NAMESPACE = "media"

# Every value set the chart ships: the defaults and each ci/*-values.yaml.
VALUE_SETS: dict[str, list[Path]] = {"default": []} | {
    path.name.removesuffix("-values.yaml"): [path] for path in sorted((CHART / "ci").glob("*-values.yaml"))
}

Manifest = dict[str, Any]


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def container_env(container: Manifest, configmaps: dict[str, Manifest]) -> dict[str, str]:
    """The environment a container sees: its envFrom ConfigMaps, then its own literal env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def strict_schema(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as `kubectl apply --validate=strict` would (the API
    server would silently prune them otherwise)."""
    if isinstance(schema, dict):
        schema = {k: strict_schema(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema

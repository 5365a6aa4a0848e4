"""skaffold.yaml: valid for skaffold/v4beta14, builds the three Dockerfiles, and its helm releases (cpu and
gpu profiles) render the chart with the images skaffold built."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_support import CHART, K8S_VERSION, ROOT, SCHEMAS, Manifest, by_kind

SKAFFOLD = ROOT / "skaffold.yaml"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / "skaffold" / "v4beta14.json").read_text()))


def releases(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Profile name -> its helm release (the base config is the `cpu` default)."""
    out = {"(base)": config["deploy"]["helm"]["releases"][0]}
    for profile in config["profiles"]:
        out[profile["name"]] = profile["deploy"]["helm"]["releases"][0]
    return out


def render_release(render: Callable[..., list[Manifest]], release: dict[str, Any], tag: str) -> list[Manifest]:
    """What skaffold's helm deployer would install: its templates filled in like skaffold does."""

    def fill(template: str) -> str:
        def repl(match: re.Match[str]) -> str:
            kind, image = match.group(1), match.group(2)
            return {"REPO": f"registry.example/{image.replace('_', '-')}", "TAG": "abc1234", "DIGEST": tag}[kind]

        return re.sub(r"\{\{\s*\.IMAGE_(REPO|TAG|DIGEST)_(\w+)\s*\}\}", repl, template)

    values = {k: fill(v) for k, v in release.get("setValueTemplates", {}).items()}
    values |= {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in release.get("setValues", {}).items()}
    files = [ROOT / f for f in release.get("valuesFiles", [])]
    return render(*files, set_values=values, release=release["name"], namespace=release["namespace"])


def test_skaffold_config_is_valid(skaffold: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    errors = list(validator.iter_errors(skaffold))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    broken = yaml.safe_load(SKAFFOLD.read_text())
    broken["deploy"]["helm"]["releases"][0]["valueFile"] = "typo.yaml"
    assert list(validator.iter_errors(broken)), "the schema must reject unknown fields"


def test_builds_the_three_images_from_the_repository_root(skaffold: dict[str, Any]) -> None:
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert set(artifacts) == {"mediaflow-api", "mediaflow-transcriber", "mediaflow-compositor"}
    for image, artifact in artifacts.items():
        assert artifact["context"] == "."
        service = image.removeprefix("mediaflow-")
        assert artifact["docker"]["dockerfile"] == f"services/{service}/Dockerfile"
        assert (ROOT / artifact["docker"]["dockerfile"]).is_file()


def test_profiles_cpu_and_gpu(skaffold: dict[str, Any]) -> None:
    by_name = releases(skaffold)
    assert {"cpu", "gpu"} <= set(by_name)
    assert by_name["cpu"] == by_name["(base)"], "cpu is the default"
    assert by_name["cpu"]["setValues"]["gpu.enabled"] == "false"
    assert by_name["gpu"]["setValues"]["gpu.enabled"] == "true"
    for release in by_name.values():
        assert (ROOT / release["chartPath"]).resolve() == CHART


@pytest.mark.parametrize("digest", ["", DIGEST], ids=["loaded-locally", "pushed"])
@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_release_renders_the_built_images(
    skaffold: dict[str, Any], render: Callable[..., list[Manifest]], profile: str, digest: str
) -> None:
    release = releases(skaffold)[profile]
    manifests = render_release(render, release, digest)
    images = {
        c["image"]
        for m in manifests
        if m["kind"] in ("Deployment",)
        for c in m["spec"]["template"]["spec"]["containers"]
    }
    suffix = f":abc1234@{digest}" if digest else ":abc1234"
    assert images == {f"registry.example/mediaflow-{s}{suffix}" for s in ("api", "transcriber", "compositor")}
    for manifest in manifests:
        if manifest["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    workers = [m for m in manifests if m["kind"] == "Deployment" and not m["metadata"]["name"].endswith("gateway")]
    gpus = {
        "nvidia.com/gpu" in m["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
        for m in workers
    }
    assert gpus == {profile == "gpu"}
    encoders = {
        v["value"]
        for m in workers
        for v in m["spec"]["template"]["spec"]["containers"][0]["env"]
        if v["name"] == "MEDIAFLOW_ENCODER"
    }
    assert encoders == ({"auto"} if profile == "gpu" else {"x264"})


def test_port_forward_targets_the_gateway_service(
    skaffold: dict[str, Any], render: Callable[..., list[Manifest]]
) -> None:
    release = releases(skaffold)["cpu"]
    services = by_kind(render_release(render, release, ""), "Service")
    [forward] = skaffold["portForward"]
    assert forward["resourceType"] == "service"
    assert forward["namespace"] == release["namespace"]
    service = services[forward["resourceName"]]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    assert forward["port"] == service["spec"]["ports"][0]["port"]

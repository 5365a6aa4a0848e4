"""The chart's service-to-service security: one gRPC token (a generated or given Secret) for the gateway
and every worker, the workers' bind host, and the webhook settings (per-tenant secrets, concurrency)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from helm_support import CHART, RELEASE, Manifest, by_kind, container_env

from mediaflow.common.grpc import check_bind, is_loopback
from mediaflow.common.settings import Settings

GATEWAY = f"{RELEASE}-gateway"
WORKERS = {f"{RELEASE}-transcriber", f"{RELEASE}-compositor", f"{RELEASE}-compositor-heavy"}
WHSEC = "whsec_" + "A" * 43 + "="
ACME = "whsec_" + "B" * 43 + "="


def deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {
        name: d["spec"]["template"]["spec"]["containers"][0] for name, d in by_kind(manifests, "Deployment").items()
    }


def secret_refs(manifests: list[Manifest], variable: str) -> dict[str, tuple[str, str]]:
    return {
        name: (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for name, container in deployments(manifests).items()
        for env in container.get("env", [])
        if env["name"] == variable
    }


def test_one_generated_token_for_the_gateway_and_every_worker(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    refs = secret_refs(manifests, "MEDIAFLOW_GRPC_TOKEN")
    assert set(refs) == {GATEWAY, *WORKERS}
    assert set(refs.values()) == {(f"{RELEASE}-grpc", "grpc-token")}
    token = by_kind(manifests, "Secret")[f"{RELEASE}-grpc"]["stringData"]["grpc-token"]
    assert len(token) >= 32 and token.isalnum()

    # the workers listen on every interface (the gateway and the kubelet's gRPC probes reach the pod) and,
    # with the token the Secret gives them, start: no refusal, no opt-out needed
    configmaps = by_kind(manifests, "ConfigMap")
    for name in WORKERS:
        env = container_env(deployments(manifests)[name], configmaps)
        settings = Settings(grpc_bind_host=env["MEDIAFLOW_GRPC_BIND_HOST"], grpc_token=token)
        assert not is_loopback(settings.grpc_bind_host) and not settings.grpc_insecure
        check_bind(settings.grpc_bind_host, settings.grpc_token, settings.grpc_insecure)
        assert "MEDIAFLOW_GRPC_INSECURE" not in env


def test_a_given_token_or_secret(render: Callable[..., list[Manifest]]) -> None:
    given = render(set_values={"grpc.token": "a-given-token", "grpc.bindHost": "0.0.0.0"})
    assert by_kind(given, "Secret")[f"{RELEASE}-grpc"]["stringData"]["grpc-token"] == "a-given-token"
    assert by_kind(given, "ConfigMap")[RELEASE]["data"]["MEDIAFLOW_GRPC_BIND_HOST"] == "0.0.0.0"

    existing = render(set_values={"grpc.existingSecret": "my-grpc"})
    assert f"{RELEASE}-grpc" not in by_kind(existing, "Secret")
    assert set(secret_refs(existing, "MEDIAFLOW_GRPC_TOKEN").values()) == {("my-grpc", "grpc-token")}


def test_webhook_tenant_secrets_and_concurrency(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(
        set_values={"webhooks.secret": WHSEC, "webhooks.tenantSecrets.acme": ACME, "webhooks.concurrency": "3"}
    )
    secret = by_kind(manifests, "Secret")[f"{RELEASE}-webhooks"]["stringData"]
    refs = secret_refs(manifests, "MEDIAFLOW_TENANT_WEBHOOK_SECRETS")
    assert set(refs) == {GATEWAY, *WORKERS} and set(refs.values()) == {
        (f"{RELEASE}-webhooks", "tenant-webhook-secrets")
    }
    data = by_kind(manifests, "ConfigMap")[RELEASE]["data"]
    settings = Settings(
        webhook_secret=secret["webhook-secret"],
        tenant_webhook_secrets=secret["tenant-webhook-secrets"],
        webhook_concurrency=data["MEDIAFLOW_WEBHOOK_CONCURRENCY"],
    )
    assert settings.tenant_webhook_secrets == {"acme": ACME} and settings.webhook_concurrency == 3
    assert secret_refs(render(), "MEDIAFLOW_TENANT_WEBHOOK_SECRETS") == {}  # webhooks off by default


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhooks.tenantSecrets.acme": ACME}, "webhooks.tenantSecrets needs webhooks.secret"),
        ({"webhooks.secret": WHSEC, "webhooks.tenantSecrets.acme": "not-a-secret"}, "schema"),
        ({"webhooks.concurrency": "0"}, "schema"),
        ({"grpc.token": "has a space"}, "schema"),
    ],
)
def test_bad_values_are_refused(helm: str, values: dict[str, str], message: str) -> None:
    cmd = [helm, "template", RELEASE, str(CHART)]
    for name, value in values.items():
        cmd += ["--set", f"{name}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr

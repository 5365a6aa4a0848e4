"""Helpers for end-to-end tests of one-machine mode: a real `mediaflow up` process and CLI runs."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

BIN = Path(sys.executable).parent
MEDIAFLOW = str(BIN / "mediaflow")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any MEDIAFLOW_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAFLOW_")}
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIAFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class UpProcess:
    """`mediaflow up` in a subprocess, its output collected line by line."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, workers: str = "compositor", env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.workers = workers
        self.env = env if env is not None else clean_env()
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.api_key = ""

    def start(self, timeout: float = 120) -> UpProcess:
        self.proc = subprocess.Popen(
            [MEDIAFLOW, "up", "--port", str(self.port), "--data-dir", str(self.data_dir), "--workers", self.workers],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"URL:\s+(\S+)", timeout).group(1)
        self.api_key = self.wait_for(r"API key:\s+(\S+)", 5).group(1)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[after:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"mediaflow up exited ({self.proc.returncode}) before {pattern!r}:\n" + self.output
                )
            return None

        try:
            return wait_until(find, timeout, what=pattern)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output}") from None

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child(self, needle: str) -> psutil.Process:
        for proc in self.descendants():
            if needle in " ".join(proc.cmdline()):
                return proc
        raise AssertionError(f"no child process matching {needle!r}")

    def client_env(self, **extra: str) -> dict[str, str]:
        return clean_env(MEDIAFLOW_URL=self.url, MEDIAFLOW_API_KEY=self.api_key, **extra)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for proc in self.descendants():
                proc.kill()
            self.proc.kill()
            raise

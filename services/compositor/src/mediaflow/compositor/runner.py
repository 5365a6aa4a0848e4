"""Running ffmpeg: progress from `-progress pipe:1`, the full command and stderr kept for the
`ffmpeg.log` artifact, and a process group that is killed at once on cancel or time-out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.trace import Span

from mediaflow.common.errors import MediaflowError
from mediaflow.common.telemetry import tracer

ProgressFn = Callable[[float, dict[str, str]], Awaitable[None]]


@dataclass
class FfmpegLog:
    """Every command of a render and its stderr, in order (the `ffmpeg.log` artifact)."""

    entries: list[str] = field(default_factory=list)

    def add(self, cmd: list[str], stderr: str, rc: object, seconds: float) -> None:
        self.entries.append(f"$ {shlex.join(cmd)}\n# exit {rc} after {seconds:.2f} s\n{stderr}\n")

    def text(self) -> str:
        return "\n".join(self.entries)


def parse_progress(block: dict[str, str]) -> float | None:
    """Seconds of output written so far, from one `-progress` block (out_time_us, else out_time_ms,
    which ffmpeg also reports in microseconds)."""
    for key in ("out_time_us", "out_time_ms"):
        raw = block.get(key, "")
        if raw and raw != "N/A":
            with contextlib.suppress(ValueError):
                return max(0.0, int(raw) / 1_000_000)
    return None


async def run_ffmpeg(cmd: list[str], log: FfmpegLog, stderr_path: Path, on_progress: ProgressFn | None = None) -> None:
    """Run one ffmpeg command in its own process group. Cancellation of the calling task (job
    cancel, job time-out, worker shutdown) kills the whole group before the exception goes on."""
    cmd = [cmd[0], "-progress", "pipe:1", "-nostats", *cmd[1:]]
    with tracer().start_as_current_span(
        "ffmpeg", attributes={"process.executable.name": Path(cmd[0]).name, "process.command_args": cmd[:64]}
    ) as span:
        await _run_ffmpeg(cmd, log, stderr_path, on_progress, span)


async def _run_ffmpeg(
    cmd: list[str], log: FfmpegLog, stderr_path: Path, on_progress: ProgressFn | None, span: Span
) -> None:
    started = time.monotonic()
    rc: int | None = None
    with open(stderr_path, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            block: dict[str, str] = {}
            async for raw in proc.stdout:
                key, _, value = raw.decode(errors="replace").strip().partition("=")
                block[key] = value
                if key == "progress":
                    seconds = parse_progress(block)
                    if on_progress is not None and seconds is not None:
                        await on_progress(seconds, block)
                    block = {}
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
            stderr = stderr_path.read_text(errors="replace")
            log.add(
                cmd,
                stderr,
                proc.returncode if rc is not None else f"killed ({proc.returncode})",
                time.monotonic() - started,
            )
    span.set_attribute("process.exit.code", proc.returncode if proc.returncode is not None else -1)
    if rc != 0:
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:])
        raise MediaflowError(f"ffmpeg failed (exit {rc}): {tail[:500]}", code="render_failed")


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

"""What a job handler works with: `JobContext` (the record, progress, artifacts, cancel checks)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import metrics
from ..errors import InvalidInput
from ..fetch import fetch_url, redacted, url_suffix
from ..jobs import keys
from ..jobs.family import Workflows, child_progress
from ..jobs.model import Artifact, Job, JobState
from ..jobs.store import Events, Fence, JobStore, LeaseLost, Mutation
from ..settings import Settings
from ..storage import Storage, allowed_path
from ..telemetry import stage_span

T = TypeVar("T")

# Returned by a parent's handler: "my children finish me" (jobs/family.py); the job stays running.
DETACHED: dict[str, Any] = {"detached": True}


class JobCancelled(Exception):
    """Raised inside blocking work (threads) when the job was cancelled."""


@dataclass
class JobContext:
    """What a job handler gets: the record, progress reporting, artifacts, cancel checks."""

    job: Job
    store: JobStore
    storage: Storage
    settings: Settings
    worker_id: str
    workflows: Workflows = field(default_factory=dict)  # parents' workflows, for progress roll-up
    artifacts: list[Artifact] = field(default_factory=list)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # The write of the running record, still in flight when the handler starts (attempts.py).
    started: Awaitable[bool] | None = None
    # This attempt's lease: every write of the attempt lands only while it holds (store.py).
    fence: Fence | None = None
    _last_progress: float = 0.0
    _loop: asyncio.AbstractEventLoop | None = None

    async def progress(self, fraction: float, stage: str | None = None, message: str = "", force: bool = False) -> None:
        """Report progress (0..1). Throttled to one event per `progress_interval` unless the stage
        changes or `force` is set."""
        fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        stage_changed = stage is not None and stage != self.job.stage
        if not (force or stage_changed or now - self._last_progress >= self.settings.progress_interval):
            return
        self._last_progress = now
        if self.started is not None:
            await self.started  # after the running record, never before it

        def mutate(job: Job) -> Events:
            job.progress = max(job.progress, fraction) if stage is None or not stage_changed else fraction
            if stage is not None:
                job.stage = stage
            job.message = message
            return [("progress", {"progress": job.progress, "stage": job.stage, "message": message})]

        try:
            self.job = await self.store.update(self.job.id, mutate, known=self.job, fence=self.fence)
        except LeaseLost:
            self.cancel_event.set()  # work in threads stops at its next progress call
            raise
        if self.job.state == JobState.cancelling:
            self.cancel_event.set()
        if self.job.parent_id:  # a child's progress shows on its parent, as the parent's workflow weighs it
            await child_progress(self.store, self.job, fraction, message, self.workflows)

    async def update(self, mutate: Mutation) -> Job:
        """Change the job's own record (after its running record, fenced by the attempt's lease)."""
        if self.started is not None:
            await self.started
        self.job = await self.store.update(self.job.id, mutate, known=self.job, fence=self.fence)
        return self.job

    def progress_threadsafe(self, fraction: float, stage: str | None = None, message: str = "") -> None:
        """Progress from a worker thread; raises JobCancelled once the job is cancelled."""
        if self.cancel_event.is_set():
            raise JobCancelled(self.job.id)
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.progress(fraction, stage, message), self._loop)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(self.job.id)

    async def log(self, message: str, level: str = "info") -> None:
        await self.store.log(self.job.id, message, level)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound work in a thread. On cancel the thread is told (cancel_event) and awaited,
        so the device it uses is free again when the job ends."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.cancel_event.set()
            with contextlib.suppress(BaseException):
                await fut
            raise

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named step of the job: a tracing span, and its duration in
        `mediaflow_worker_stage_duration_seconds{stage=name}` (keep names a fixed set)."""
        with stage_span(name), metrics.timed_stage(self.job.queue, self.job.type.value, name):
            yield

    def media_path(self, ref: dict[str, Any] | None = None) -> MediaFile:
        """A local file for media named by `ref` (default: the job's input), as a context manager:
        `storage_key` (uploaded media, fetched from S3 if need be), `path` (under an allow-listed root,
        checked again here) or `url` (downloaded within the URL policy, checked again here, into a
        temporary directory removed afterwards). Prefer `async with` in a handler: downloads then run
        in a thread and the worker's loop (lease, progress, cancel) keeps going."""
        return MediaFile(self, self.job.input if ref is None else ref)

    @contextlib.contextmanager
    def _open_media(self, ref: dict[str, Any]) -> Iterator[Path]:
        if ref.get("storage_key"):  # first: a URL input already fetched into storage is not fetched again
            with self.storage.local_path(ref["storage_key"]) as path:
                yield path
        elif ref.get("path"):
            yield allowed_path(ref["path"], self.settings.allowed_roots)
        elif ref.get("url"):
            with tempfile.TemporaryDirectory(prefix="mediaflow_url_") as tmp:
                dest = Path(tmp) / f"input{url_suffix(ref['url'])}"
                fetch_url(ref["url"], dest, self.settings, progress=self._fetch_progress(ref["url"]))
                yield dest
        else:
            raise InvalidInput("the job names no media (storage_key, path or url)", code="invalid_input")

    def _fetch_progress(self, url: str) -> Callable[[int, int | None], None]:
        """Download progress as `fetch` stage messages (the fraction stays where the job is)."""
        last = 0.0

        def report(done: int, total: int | None) -> None:
            nonlocal last
            self.check_cancelled()  # per chunk: a cancelled job stops downloading at once
            if time.monotonic() - last < self.settings.progress_interval:
                return
            last = time.monotonic()
            of = f" of {total / 1e6:.1f}" if total else ""
            self.progress_threadsafe(self.job.progress, "fetch", f"{redacted(url)}: {done / 1e6:.1f}{of} MB")

        return report

    async def write_artifact(self, name: str, src: Path | bytes, content_type: str) -> Artifact:
        """Store an artifact of this attempt. It is staged under the attempt and published (moved to
        `jobs/{id}/{name}`) when the attempt ends holding its lease (`publish_artifacts`)."""
        key = keys.staged_artifact(self.job.id, self.job.attempt, name)
        if isinstance(src, bytes | bytearray):

            def put() -> int:
                with self.storage.writer(key) as out:
                    out.write(src)
                return len(src)
        else:

            def put() -> int:
                return self.storage.put_file(key, src)

        size = await asyncio.to_thread(put)
        artifact = Artifact(name=name, size=size, content_type=content_type)
        self.artifacts = [a for a in self.artifacts if a.name != name] + [artifact]
        return artifact

    def publish_artifacts(self) -> None:
        """Move this attempt's artifacts into place (blocking; the attempt's outcome write follows)."""
        for artifact in self.artifacts:
            self.storage.move(
                keys.staged_artifact(self.job.id, self.job.attempt, artifact.name),
                keys.artifact(self.job.id, artifact.name),
            )
        self.discard_staged()

    def discard_staged(self) -> None:
        self.storage.delete_prefix(keys.attempt_files(self.job.id, self.job.attempt))


class MediaFile:
    """What `JobContext.media_path` returns: `with` it (blocking; in a thread) or `async with` it."""

    def __init__(self, ctx: JobContext, ref: dict[str, Any]) -> None:
        self.ctx, self.ref = ctx, ref
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Path:
        return self._stack.enter_context(self.ctx._open_media(self.ref))

    def __exit__(self, *exc: Any) -> bool | None:
        return self._stack.__exit__(*exc)

    async def __aenter__(self) -> Path:
        url = self.ref.get("url")
        if url and not (self.ref.get("storage_key") or self.ref.get("path")):
            await self.ctx.progress(self.ctx.job.progress, "fetch", f"fetching {redacted(url)}", force=True)
        try:
            return await self.ctx.run_blocking(self.__enter__)
        except BaseException:  # cancelled right after the download: its temporary directory goes too
            await asyncio.to_thread(self._stack.close)
            raise

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await asyncio.to_thread(self.__exit__, *exc)


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]

"""Pipeline jobs: a parent whose work is done by child jobs (`caption` = transcribe → compose).

No worker slot waits for a child. The parent's handler only creates the first child and returns
`DETACHED`, which leaves the parent `running`; after that, every time a job with a `parent_id`
reaches a terminal state, the worker that ran it calls `advance_parent`, which enqueues the next
step or finishes the parent. Progress is rolled up on the parent with per-step weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from arq.constants import abort_jobs_ss

from .dispatch import Dispatcher
from .errors import Conflict, InvalidInput, MediaflowError, NotFound
from .fetch import guess_content_type, redacted, url_filename, url_suffix
from .ids import new_job_id, new_media_id
from .jobs import Artifact, Job, JobError, JobState, JobType, Media
from .probe import probe_file
from .queues import TRANSCRIBE_QUEUE, queue_for
from .settings import Settings
from .storage import Storage
from .store import JobStore

if TYPE_CHECKING:
    from .context import JobContext

log = logging.getLogger("mediaflow.pipeline")

# Returned by a parent's handler: "my children finish me"; the worker then leaves the job running.
DETACHED: dict[str, Any] = {"detached": True}
# Share of the parent's progress bar per step (composing takes longer than transcribing on CPU).
CAPTION_WEIGHTS = {JobType.transcribe: 0.4, JobType.compose: 0.6}
CAPTION_FORMATS = ["srt", "vtt", "ass", "json", "txt"]
# Child artifacts the parent carries as its own.
PARENT_ARTIFACTS = {JobType.compose: ("output.mp4", "ffmpeg.log"),
                    JobType.transcribe: ("captions.srt", "captions.vtt", "captions.ass")}


def _media_input(job: Job) -> dict[str, Any]:
    """The parent's input as its children need it: the gateway's {media_id, storage_key} or {path}."""
    picked = {k: job.input[k] for k in ("media_id", "storage_key", "path") if job.input.get(k)}
    if not picked:
        raise InvalidInput("a caption job needs input with a media_id, a path or a fetched url", code="invalid_input")
    return picked


def _timeline_source(job: Job) -> dict[str, Any]:
    media = _media_input(job)
    if "media_id" in media:
        return {"media_id": media["media_id"]}
    if "path" in media:
        return {"path": media["path"]}
    raise InvalidInput("a caption job needs input with a media_id or a path", code="invalid_input")


async def fetch_url_input(ctx: JobContext) -> Job:
    """A caption parent named by URL downloads it ONCE, into storage (`jobs/{id}/input…`), kept as media
    of its tenant; both steps then read that copy like an upload ({media_id, storage_key} on the parent's
    input), and so does a retry of the parent. Non-media fails here, before anything is queued."""
    parent = ctx.job
    url = parent.input.get("url")
    if not url or parent.input.get("storage_key"):
        return parent
    key = f"jobs/{parent.id}/input{url_suffix(url)}"
    async with ctx.media_path() as path:
        info = await asyncio.to_thread(probe_file, path)
        size = await asyncio.to_thread(ctx.storage.put_file, key, path)
    media = Media(id=new_media_id(), tenant=parent.tenant, filename=url_filename(url),
                  content_type=guess_content_type(url), size=size, duration=info.get("duration"),
                  format=str(info.get("format", "")), streams=info.get("streams", []), key=key, probed_by="worker")
    await ctx.store.put_media(media)

    def adopt(job: Job) -> list[tuple[str, dict[str, Any]]]:
        job.input = {**job.input, "media_id": media.id, "storage_key": key}
        return []

    ctx.job = await ctx.store.update(parent.id, adopt, known=parent)
    await ctx.log(f"fetched {redacted(url)}: {size} bytes, kept as media {media.id}")
    return ctx.job


async def start_caption(parent: Job, store: JobStore) -> Job:
    """Create and enqueue the transcribe child of a caption parent (once: a retried parent whose
    transcription already exists reuses it)."""
    from .options import parse_options

    options = parse_options(JobType.caption, parent.options)
    media = _media_input(parent)
    _timeline_source(parent)  # fail now, not after transcribing, if the compose step could not find the media
    transcribe = options.transcribe.model_dump(mode="json")  # type: ignore[attr-defined]
    # The compose step needs an SRT (soft track) and/or ASS (burn-in) artifact.
    transcribe["formats"] = sorted(set(transcribe.get("formats") or []) | {"srt", "ass"})
    child = Job(id=new_job_id(), type=JobType.transcribe, queue=TRANSCRIBE_QUEUE, input=dict(media),
                options=transcribe, parent_id=parent.id, tenant=parent.tenant, traceparent=parent.traceparent,
                max_attempts=parent.max_attempts)
    await _add_child(store, parent.id, child)
    return child


async def _add_child(store: JobStore, parent_id: str, child: Job) -> None:
    """Record the child on the parent, then enqueue it (in that order: a child that finishes at once
    always finds its parent pointing at it)."""

    def mutate(p: Job) -> list[tuple[str, dict[str, Any]]]:
        if p.terminal or p.state == JobState.cancelling:
            raise Conflict(f"parent {p.id} is {p.state.value}", code="parent_finished")
        p.children = [*p.children, child.id]
        p.stage, p.message = child.type.value, f"{child.type.value} step queued ({child.id})"
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": p.message})]

    await store.update(parent_id, mutate)
    await Dispatcher(store.redis).submit(child)


async def rollup_progress(store: JobStore, child: Job, fraction: float, message: str = "") -> None:
    """Reflect a child's progress on its caption parent (weighted by step)."""
    if not child.parent_id or child.type not in CAPTION_WEIGHTS:
        return
    done = CAPTION_WEIGHTS[JobType.transcribe] if child.type == JobType.compose else 0.0
    value = done + CAPTION_WEIGHTS[child.type] * min(max(fraction, 0.0), 1.0)

    def mutate(p: Job) -> list[tuple[str, dict[str, Any]]]:
        if p.terminal or value <= p.progress:
            return []
        p.progress, p.stage, p.message = value, child.type.value, message
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": message})]

    with contextlib.suppress(NotFound):
        await store.update(child.parent_id, mutate)


async def advance_parent(store: JobStore, storage: Storage, settings: Settings, job_id: str) -> None:
    """Called when job `job_id` may have reached a terminal state. If it is a finished child of a
    pipeline, enqueue the parent's next step or finish the parent. Safe to call more than once."""
    try:
        child = await store.get(job_id)
    except NotFound:
        return
    if not child.parent_id or not child.terminal:
        return
    try:
        parent = await store.get(child.parent_id)
    except NotFound:
        return
    if parent.terminal or parent.type != JobType.caption:
        return
    if parent.state == JobState.cancelling or child.state == JobState.cancelled:
        await settle_cancelled_parent(store, parent.id)
        return
    if child.state == JobState.failed:
        err = child.error or JobError(code="child_failed", message="")
        await _finish(store, parent.id, JobState.failed, error=JobError(
            code=err.code, message=f"{child.type.value} step {child.id} failed: {err.message}",
            retryable=err.retryable))
        return
    # child succeeded
    if child.type == JobType.transcribe:
        await _rollup_set(store, parent.id, CAPTION_WEIGHTS[JobType.transcribe], "transcribed")
        if len(parent.children) >= 2:
            return  # compose step already created (a repeated call)
        await _start_compose(store, settings, parent, child)
    elif child.type == JobType.compose:
        children = await store.get_many(parent.children)
        artifacts = await asyncio.to_thread(_adopt_artifacts, storage, parent, children)
        result = {**(child.result or {}), "transcribe_job_id": parent.children[0], "compose_job_id": child.id}
        transcribed = next((c.result for c in children if c.id == parent.children[0] and c.result), {})
        if "metrics" in transcribed:  # the transcriber's speech coverage, shown for the whole caption job
            result["metrics"] = transcribed["metrics"]
        await _finish(store, parent.id, JobState.succeeded, progress=1.0, stage="done", message="",
                      result=result, artifacts=artifacts)


async def _start_compose(store: JobStore, settings: Settings, parent: Job, transcribe: Job) -> None:
    from .options import parse_options

    options = parse_options(JobType.caption, parent.options)
    compose_options = {
        "output": options.output.model_dump(mode="json"),  # type: ignore[attr-defined]
        "items": [{"kind": "video", **_timeline_source(parent)}],
        "captions": {"job_id": transcribe.id, "mode": options.mode,  # type: ignore[attr-defined]
                     "style": options.style.model_dump(mode="json")},  # type: ignore[attr-defined]
    }
    child = Job(id=new_job_id(), type=JobType.compose, queue=queue_for(JobType.compose, compose_options, settings),
                options=compose_options, parent_id=parent.id, tenant=parent.tenant,
                traceparent=parent.traceparent, max_attempts=parent.max_attempts)
    try:
        await _add_child(store, parent.id, child)
    except Conflict:
        await settle_cancelled_parent(store, parent.id)


def _adopt_artifacts(storage: Storage, parent: Job, children: list[Job]) -> list[Artifact]:
    """Copy the children's deliverables under the parent's key (jobs/{parent}/...)."""
    adopted: list[Artifact] = []
    for child in children:
        for artifact in child.artifacts:
            if artifact.name not in PARENT_ARTIFACTS.get(child.type, ()):
                continue
            with storage.local_path(f"jobs/{child.id}/{artifact.name}") as src:
                size = storage.put_file(f"jobs/{parent.id}/{artifact.name}", src)
            adopted.append(Artifact(name=artifact.name, size=size, content_type=artifact.content_type))
    return adopted


async def _rollup_set(store: JobStore, parent_id: str, value: float, message: str) -> None:
    def mutate(p: Job) -> list[tuple[str, dict[str, Any]]]:
        if p.terminal:
            return []
        p.progress, p.message = max(p.progress, value), message
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": message})]

    await store.update(parent_id, mutate)


async def _finish(store: JobStore, parent_id: str, state: JobState, **fields: Any) -> None:
    with contextlib.suppress(Conflict):
        await store.transition(parent_id, state, allowed_from={JobState.running}, **fields)


async def settle_cancelled_parent(store: JobStore, parent_id: str) -> None:
    """A cancelled pipeline parent becomes `cancelled` once none of its children runs any more.
    (Called by the child hook, and by Dispatcher.cancel for children it cancelled while queued.)"""
    parent = await store.get(parent_id)
    if parent.terminal:
        return
    children = await store.get_many(parent.children)
    if any(not c.terminal for c in children):
        return
    if parent.state == JobState.running and not any(c.state == JobState.cancelled for c in children):
        return

    def drop_abort(pipe: Any, _job: Job) -> None:
        pipe.zrem(abort_jobs_ss, parent_id)  # no worker holds a detached parent: don't leave a stale abort

    with contextlib.suppress(Conflict):
        await store.transition(parent_id, JobState.cancelled, message="cancelled", extra=drop_abort)


async def safe_advance(store: JobStore, storage: Storage, settings: Settings, job_id: str) -> None:
    """`advance_parent` for the worker's hook: a pipeline problem is logged on the parent, never
    raised into the worker."""
    started = time.monotonic()
    try:
        await advance_parent(store, storage, settings, job_id)
    except MediaflowError as exc:
        log.warning("pipeline step after %s failed: %s", job_id, exc.message)
        with contextlib.suppress(Exception):
            child = await store.get(job_id)
            if child.parent_id:
                await _finish(store, child.parent_id, JobState.failed,
                              error=JobError(code=exc.code, message=exc.message))
    except Exception:
        log.exception("pipeline step after %s failed", job_id)
    finally:
        log.debug("advance_parent(%s) took %.3f s", job_id, time.monotonic() - started)

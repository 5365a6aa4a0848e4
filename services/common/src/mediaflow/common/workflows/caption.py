"""The caption workflow: a `caption` parent whose children transcribe, then compose (burn in or mux).

The parent's handler (the compositor's) fetches a URL input once (`fetch_url_input`) and starts the
transcribe step (`start_caption`); the job system then calls `CaptionWorkflow.child_succeeded` as each
step ends (jobs/family.py), which starts the compose step and finally finishes the parent with the
children's deliverables. Progress is rolled up on the parent with per-step weights.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import Conflict, InvalidInput
from ..fetch import guess_content_type, redacted, url_filename, url_suffix
from ..ids import new_job_id, new_media_id
from ..jobs import keys
from ..jobs.dispatch import Dispatcher
from ..jobs.family import finish_parent, settle_cancelled_parent
from ..jobs.model import Artifact, Job, JobState, JobType, Media
from ..jobs.queues import queue_for
from ..jobs.store import Events, JobStore
from ..options import parse_options
from ..options.compose import CaptionOptions
from ..probe import probe_file
from ..runtime.context import DETACHED, JobContext
from ..settings import Settings
from ..storage import Storage

# Share of the parent's progress bar per step (composing takes longer than transcribing on CPU).
CAPTION_WEIGHTS = {JobType.transcribe: 0.4, JobType.compose: 0.6}
# Child artifacts the parent carries as its own.
PARENT_ARTIFACTS = {
    JobType.compose: ("output.mp4", "ffmpeg.log"),
    JobType.transcribe: ("captions.srt", "captions.vtt", "captions.ass"),
}


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
    key = keys.fetched_input(parent.id, url_suffix(url))
    async with ctx.media_path() as path:
        info = await asyncio.to_thread(probe_file, path)
        size = await asyncio.to_thread(ctx.storage.put_file, key, path)
    media = Media(
        id=new_media_id(),
        tenant=parent.tenant,
        filename=url_filename(url),
        content_type=guess_content_type(url),
        size=size,
        duration=info.get("duration"),
        format=str(info.get("format", "")),
        streams=info.get("streams", []),
        key=key,
        probed_by="worker",
    )
    await ctx.store.put_media(media)

    def adopt(job: Job) -> Events:
        job.input = {**job.input, "media_id": media.id, "storage_key": key}
        return []

    await ctx.update(adopt)
    await ctx.log(f"fetched {redacted(url)}: {size} bytes, kept as media {media.id}")
    return ctx.job


async def run_caption(ctx: JobContext) -> dict[str, Any]:
    """The caption parent's handler (it runs on the compose pool): fetch a URL input once, enqueue the
    transcribe step and return at once (DETACHED); `CaptionWorkflow` takes it from there, so no worker
    slot waits for a step."""
    _caption_options(ctx.job)
    if ctx.job.children:  # a retried parent starts over with fresh children
        ctx.job.children = []

        def reset(job: Job) -> Events:
            job.children = []
            return []

        await ctx.update(reset)
    if ctx.job.input.get("url"):
        with ctx.stage("fetch"):
            await fetch_url_input(ctx)
    await ctx.progress(0.0, "transcribe", "transcription queued", force=True)
    child = await start_caption(ctx.job, ctx.store, ctx.settings)
    await ctx.log(f"transcribe step {child.id} queued")
    return DETACHED


async def start_caption(parent: Job, store: JobStore, settings: Settings) -> Job:
    """Create and enqueue the transcribe child of a caption parent (once: a retried parent whose
    transcription already exists reuses it)."""
    options = _caption_options(parent)
    media = _media_input(parent)
    _timeline_source(parent)  # fail now, not after transcribing, if the compose step could not find the media
    transcribe = options.transcribe.model_dump(mode="json")
    # The compose step needs an SRT (soft track) and/or ASS (burn-in) artifact.
    transcribe["formats"] = sorted(set(transcribe.get("formats") or []) | {"srt", "ass"})
    child = Job(
        id=new_job_id(),
        type=JobType.transcribe,
        queue=keys.TRANSCRIBE_QUEUE,
        input=dict(media),
        options=transcribe,
        parent_id=parent.id,
        tenant=parent.tenant,
        traceparent=parent.traceparent,
        max_attempts=parent.max_attempts,
    )
    await Dispatcher(store.redis, priority_aging_seconds=settings.priority_aging_seconds).submit_child(parent.id, child)
    return child


def _caption_options(parent: Job) -> CaptionOptions:
    options = parse_options(JobType.caption, parent.options)
    assert isinstance(options, CaptionOptions)
    return options


class CaptionWorkflow:
    """The job system's hook for `caption` parents (jobs/family.py `Workflow`)."""

    def progress(self, parent: Job, child: Job, fraction: float) -> float | None:
        if child.type not in CAPTION_WEIGHTS:
            return None
        done = CAPTION_WEIGHTS[JobType.transcribe] if child.type == JobType.compose else 0.0
        return done + CAPTION_WEIGHTS[child.type] * fraction

    async def child_succeeded(
        self, store: JobStore, storage: Storage, settings: Settings, parent: Job, child: Job
    ) -> None:
        if child.type == JobType.transcribe:
            await _rollup_set(store, parent.id, CAPTION_WEIGHTS[JobType.transcribe], "transcribed")
            if len(parent.children) < 2:  # else the compose step exists already (a repeated call)
                await _start_compose(store, settings, parent, child)
        elif child.type == JobType.compose:
            children = await store.get_many(parent.children)
            artifacts = await asyncio.to_thread(_adopt_artifacts, storage, parent, children)
            result = {**(child.result or {}), "transcribe_job_id": parent.children[0], "compose_job_id": child.id}
            transcribed = next((c.result for c in children if c.id == parent.children[0] and c.result), {})
            if "metrics" in transcribed:  # the transcriber's speech coverage, shown for the whole caption job
                result["metrics"] = transcribed["metrics"]
            await finish_parent(
                store,
                parent.id,
                JobState.succeeded,
                progress=1.0,
                stage="done",
                message="",
                result=result,
                artifacts=artifacts,
            )


async def _start_compose(store: JobStore, settings: Settings, parent: Job, transcribe: Job) -> None:
    options = _caption_options(parent)
    compose_options = {
        "output": options.output.model_dump(mode="json"),
        "items": [{"kind": "video", **_timeline_source(parent)}],
        "captions": {"job_id": transcribe.id, "mode": options.mode, "style": options.style.model_dump(mode="json")},
    }
    child = Job(
        id=new_job_id(),
        type=JobType.compose,
        queue=queue_for(JobType.compose, compose_options, settings),
        options=compose_options,
        parent_id=parent.id,
        tenant=parent.tenant,
        traceparent=parent.traceparent,
        max_attempts=parent.max_attempts,
    )
    try:
        await Dispatcher(store.redis, priority_aging_seconds=settings.priority_aging_seconds).submit_child(
            parent.id, child
        )
    except Conflict:
        await settle_cancelled_parent(store, parent.id)


def _adopt_artifacts(storage: Storage, parent: Job, children: list[Job]) -> list[Artifact]:
    """Copy the children's deliverables under the parent's key (jobs/{parent}/...)."""
    adopted: list[Artifact] = []
    for child in children:
        for artifact in child.artifacts:
            if artifact.name not in PARENT_ARTIFACTS.get(child.type, ()):
                continue
            with storage.local_path(keys.artifact(child.id, artifact.name)) as src:
                size = storage.put_file(keys.artifact(parent.id, artifact.name), src)
            adopted.append(Artifact(name=artifact.name, size=size, content_type=artifact.content_type))
    return adopted


async def _rollup_set(store: JobStore, parent_id: str, value: float, message: str) -> None:
    def mutate(p: Job) -> Events:
        if p.terminal:
            return []
        p.progress, p.message = max(p.progress, value), message
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": message})]

    await store.update(parent_id, mutate)


CAPTION = CaptionWorkflow()

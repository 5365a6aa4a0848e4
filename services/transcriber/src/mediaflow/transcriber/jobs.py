"""The `transcribe` job handler: media -> transcript -> caption and transcript artifacts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mediaflow.common.context import JobContext
from mediaflow.common.errors import InvalidInput
from mediaflow.common.jobs import JobType
from mediaflow.common.options import parse_options
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.storage import allowed_path

from .captions import render
from .model import get_models
from .service import run_transcription

log = logging.getLogger("mediaflow.transcriber")


@contextlib.contextmanager
def media_path(ctx: JobContext) -> Iterator[Path]:
    """The job's media as a local file: an object in storage or an allow-listed server path."""
    source = ctx.job.input
    if source.get("storage_key"):
        with ctx.storage.local_path(source["storage_key"]) as path:
            yield path
        return
    if source.get("path"):
        # the same allow-list check the gateway made at submit (roots, symlinks, `..`)
        yield allowed_path(source["path"], ctx.settings.allowed_roots)
        return
    raise InvalidInput("the job names no media (storage_key or path)", code="missing_input")


async def transcribe(ctx: JobContext) -> dict[str, Any]:
    options = parse_options(JobType.transcribe, ctx.job.options)
    assert isinstance(options, TranscribeOptions)
    models = get_models(ctx.settings)  # loaded at startup; this only returns it
    await ctx.progress(0.0, "transcribing", force=True)
    with media_path(ctx) as path:
        transcript = await ctx.run_blocking(
            lambda: run_transcription(models, path, options, progress=ctx.progress_threadsafe))
    ctx.check_cancelled()
    await ctx.progress(0.96, "captions", force=True)
    files = await ctx.run_blocking(render, transcript, list(options.formats), options.captions)
    for name, (data, content_type) in files.items():
        await ctx.write_artifact(name, data, content_type)
    return {
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "word_count": transcript.analytics.get("word_count", 0),
        "speakers": transcript.speakers,
        "segments": len(transcript.segments),
        "model": transcript.model,
        "text_preview": transcript.text[:280],
    }

"""The `transcribe` job handler: media -> transcript -> caption and transcript artifacts."""

from __future__ import annotations

import logging
from typing import Any

from mediaflow.common.jobs.model import JobType
from mediaflow.common.options import parse_options
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.runtime.context import JobContext

from .captions import render
from .model import get_models
from .service import run_transcription

log = logging.getLogger("mediaflow.transcriber")


async def transcribe(ctx: JobContext) -> dict[str, Any]:
    options = parse_options(JobType.transcribe, ctx.job.options)
    assert isinstance(options, TranscribeOptions)
    models = get_models(ctx.settings)  # loaded at startup; this only returns it
    await ctx.progress(0.0, "transcribing", force=True)
    # storage key, allow-listed path (checked again) or URL (downloaded in a thread, policy checked again)
    with ctx.stage("transcribe"):
        async with ctx.media_path() as path:
            transcript = await ctx.run_blocking(
                lambda: run_transcription(models, path, options, progress=ctx.progress_threadsafe)
            )
    ctx.check_cancelled()
    await ctx.progress(0.96, "captions", force=True)
    with ctx.stage("captions"):
        files = await ctx.run_blocking(render, transcript, list(options.formats), options.captions, options.vocabulary)
    with ctx.stage("upload"):
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
        # the coverage guard's account: how much detected speech the words cover
        "metrics": transcript.coverage.model_dump(),
    }

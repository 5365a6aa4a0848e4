"""The `transcribe` job handler: media -> transcript -> caption and transcript artifacts."""

from __future__ import annotations

import logging
from typing import Any

from mediaflow.common.jobs.model import JobType
from mediaflow.common.jobs.search import SearchIndex
from mediaflow.common.options import parse_options
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.runtime.context import JobContext

from .captions import render
from .model import get_models
from .service import run_transcription
from .speakers import name_speakers
from .transcript import Transcript

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
    await name_speakers(ctx, transcript)  # the tenant's enrolled voices name the speakers found
    await ctx.progress(0.96, "captions", force=True)
    with ctx.stage("captions"):
        files = await ctx.run_blocking(
            render, transcript, list(options.formats), options.captions, options.vocabulary, options.bilingual
        )
    with ctx.stage("upload"):
        for name, (data, content_type) in files.items():
            await ctx.write_artifact(name, data, content_type)
    with ctx.stage("index"):  # searchable once the job has succeeded (GET /v1/search)
        await SearchIndex(ctx.store).index_transcript(ctx.job.tenant, ctx.job.id, transcript.segments)
    return {
        "language": transcript.language,
        "language_probability": transcript.language_probability,  # None when the language was given
        "duration": round(transcript.duration, 3),
        "word_count": transcript.analytics.get("word_count", 0),
        "speakers": transcript.speakers,
        "segments": len(transcript.segments),
        "model": transcript.model,
        "text_preview": transcript.text[:280],
        # the coverage guard's account: how much detected speech the words cover
        "metrics": transcript.coverage.model_dump(),
        # results that may be wrong, e.g. language_uncertain (see docs/transcriber.md, "Languages")
        "warnings": [w.model_dump() for w in transcript.warnings],
        **({"translation": _translation_summary(transcript)} if transcript.translation else {}),
    }


def _translation_summary(transcript: Transcript) -> dict[str, Any]:
    assert transcript.translation is not None
    return {
        "language": transcript.translation.language,
        "backend": transcript.translation.backend,
        "text_preview": transcript.translation.text[:280],
    }

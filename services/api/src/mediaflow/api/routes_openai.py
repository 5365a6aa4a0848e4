"""OpenAI-compatible synchronous transcription: `POST /v1/audio/transcriptions`.

The gateway never loads a model: it checks the upload (size, duration), then calls a transcriber
worker over gRPC `Transcriber.Transcribe` with a deadline. Long media belongs on the job queue
(`POST /v1/jobs`), so it gets 413 `media_too_long` with that hint.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from mediaflow.common.grpc import MAX_MESSAGE_BYTES, channel
from mediaflow.common.probe import probe_file
from mediaflow.common.subtitles import TextFormat, write_subtitles
from mediaflow.v1 import transcriber_pb2, transcriber_pb2_grpc

from .auth import require_tenant
from .problems import Problem, problem_responses

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
ERROR_CODE_KEY = "mediaflow-error-code"
# Whisper's language names for the codes clients most often see (verbose_json reports a name).
LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "ja": "japanese",
    "zh": "chinese",
    "ru": "russian",
}


def to_subtitles(response: transcriber_pb2.TranscribeResponse, fmt: TextFormat) -> str:
    return write_subtitles(((s.start, s.end, [s.text.strip()]) for s in response.segments), fmt)


def to_verbose_json(response: transcriber_pb2.TranscribeResponse, granularities: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(response.language, response.language),
        "duration": round(response.duration, 3),
        "text": response.text,
    }
    if "segment" in granularities or not granularities or "word" not in granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in response.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in response.segments
            for w in s.words
        ]
    return body


async def _read_upload(file: UploadFile) -> bytes:
    data = await file.read(MAX_MESSAGE_BYTES + 1)
    if len(data) > MAX_MESSAGE_BYTES:
        raise Problem(
            413,
            "payload_too_large",
            f"synchronous transcription takes files up to {MAX_MESSAGE_BYTES} bytes; "
            "upload larger media with POST /v1/media and submit a transcribe job",
        )
    if not data:
        raise Problem(400, "empty_file", "the uploaded file is empty")
    return data


async def _media_duration(file: UploadFile) -> float:
    """Probe the spooled upload (python-multipart keeps large ones on disk)."""

    def probe() -> float:
        import tempfile

        file.file.seek(0)
        with tempfile.NamedTemporaryFile(prefix="mediaflow-sync-") as fh:
            while chunk := file.file.read(1024 * 1024):
                fh.write(chunk)
            fh.flush()
            info = probe_file(fh.name)
        if not any(s["kind"] == "audio" for s in info["streams"]):
            raise Problem(422, "no_audio_stream", "the media has no audio stream")
        return float(info["duration"] or 0.0)

    return await asyncio.to_thread(probe)


def _problem_from_rpc(exc: grpc.aio.AioRpcError, target: str) -> Problem:
    code = dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY, "")
    status = exc.code()
    if status == grpc.StatusCode.UNAVAILABLE:
        return Problem(
            503,
            code or "transcriber_unavailable",
            f"no transcriber is reachable at {target}; try again shortly",
            headers={"Retry-After": "5"},
        )
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Problem(
            504,
            "transcription_timeout",
            "the transcriber did not finish in time; submit a transcribe job for long media",
        )
    if status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        detail = exc.details() or "invalid request"
        if code and detail.startswith(f"{code}: "):
            detail = detail[len(code) + 2 :]
        return Problem(422 if code != "unsupported_language" else 400, code or "invalid_request", detail)
    return Problem(502, "transcriber_error", f"the transcriber failed: {exc.details()}")


@router.post(
    "/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    responses=problem_responses(400, 401, 413, 415, 422, 503, 504),
)
async def create_transcription(
    request: Request,
    file: Annotated[UploadFile, File(description="the media file (any container/codec with audio)")],
    tenant: Annotated[str, Depends(require_tenant)],
    model: Annotated[str, Form(description="accepted for compatibility; the server's model is used")] = "whisper-1",
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
) -> Response:
    settings = request.app.state.services.settings
    if response_format not in RESPONSE_FORMATS:
        raise Problem(400, "invalid_response_format", f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
    granularities = set(timestamp_granularities or [])
    if granularities - {"word", "segment"}:
        raise Problem(400, "invalid_timestamp_granularity", "timestamp_granularities[] takes word and/or segment")
    duration = await _media_duration(file)
    if duration > settings.sync_max_duration:
        raise Problem(
            413,
            "media_too_long",
            f"the media lasts {duration:.0f} s; the synchronous route takes up to {settings.sync_max_duration:.0f} s",
            hint="upload it with POST /v1/media and submit a transcribe job (POST /v1/jobs)",
            max_duration=settings.sync_max_duration,
        )
    await file.seek(0)
    data = await _read_upload(file)
    rpc_request = transcriber_pb2.TranscribeRequest(
        audio=data,
        language=language or "",
        task="transcribe",
        prompt=prompt or "",
        word_timestamps="word" in granularities,
        temperature=temperature,
    )
    # Deadline: the base RPC allowance plus real time for the media (tiny on CPU runs ~20x faster).
    deadline = settings.grpc_deadline + duration
    target = settings.transcriber_grpc
    try:
        async with channel(target, settings.grpc_token) as ch:
            result = await transcriber_pb2_grpc.TranscriberStub(ch).Transcribe(rpc_request, timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        raise _problem_from_rpc(exc, target) from None

    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_subtitles(result, "srt"), media_type="application/x-subrip")
    if response_format == "vtt":
        return PlainTextResponse(to_subtitles(result, "vtt"), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(to_verbose_json(result, granularities))
    return JSONResponse({"text": result.text})


__all__ = ["router"]

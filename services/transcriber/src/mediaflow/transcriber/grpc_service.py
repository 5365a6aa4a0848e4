"""gRPC `mediaflow.v1.Transcriber`, served by the worker process with the worker's loaded model."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc

from mediaflow.common.errors import MediaflowError
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.storage import Storage
from mediaflow.v1 import transcriber_pb2, transcriber_pb2_grpc

from .model import Models
from .service import run_transcription
from .transcript import Transcript

SERVICE_NAME = "mediaflow.v1.Transcriber"
ERROR_CODE_KEY = "mediaflow-error-code"  # trailing metadata: the stable error code


class RequestCancelled(Exception):
    pass


def to_proto(transcript: Transcript) -> transcriber_pb2.TranscribeResponse:
    return transcriber_pb2.TranscribeResponse(
        language=transcript.language,
        duration=transcript.duration,
        text=transcript.text,
        model=transcript.model,
        segments=[
            transcriber_pb2.Segment(
                id=s.id,
                start=s.start,
                end=s.end,
                text=s.text,
                speaker=s.speaker or "",
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
                words=[
                    transcriber_pb2.Word(
                        text=w.text, start=w.start, end=w.end, probability=w.probability, speaker=w.speaker or ""
                    )
                    for w in s.words
                ],
            )
            for s in transcript.segments
        ],
    )


class TranscriberServicer(transcriber_pb2_grpc.TranscriberServicer):
    def __init__(self, models: Models, storage: Storage) -> None:
        self.models = models
        self.storage = storage

    @contextlib.contextmanager
    def _media(self, request: transcriber_pb2.TranscribeRequest) -> Iterator[Path]:
        if request.WhichOneof("source") == "storage_key":
            with self.storage.local_path(request.storage_key) as path:
                yield path
            return
        with tempfile.NamedTemporaryFile(prefix="mediaflow-sync-") as fh:
            fh.write(request.audio)
            fh.flush()
            yield Path(fh.name)

    async def Transcribe(
        self, request: transcriber_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> transcriber_pb2.TranscribeResponse:
        if request.WhichOneof("source") is None or (request.WhichOneof("source") == "audio" and not request.audio):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "empty_audio", "no media in the request")
        try:
            options = TranscribeOptions(
                language=request.language or None,
                task=request.task or "transcribe",
                prompt=request.prompt or None,
                word_timestamps=request.word_timestamps,
                formats=[],
                summary=False,
            )
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid_options", str(exc))
        gone = threading.Event()
        context.add_done_callback(lambda _ctx: gone.set())

        def progress(_fraction: float, _stage: str) -> None:
            if gone.is_set():  # the caller gave up (deadline, cancel): stop between batches
                raise RequestCancelled

        def work() -> Transcript:
            with self._media(request) as path:
                return run_transcription(self.models, path, options, progress=progress, temperature=request.temperature)

        try:
            transcript = await asyncio.to_thread(work)
        except MediaflowError as exc:
            status = (
                grpc.StatusCode.UNAVAILABLE
                if exc.retryable
                else (grpc.StatusCode.NOT_FOUND if exc.status == 404 else grpc.StatusCode.INVALID_ARGUMENT)
            )
            await _abort(context, status, exc.code, exc.message)
        except RequestCancelled:
            await _abort(context, grpc.StatusCode.CANCELLED, "cancelled", "the request was cancelled")
        return to_proto(transcript)

    async def GetInfo(
        self, request: transcriber_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> transcriber_pb2.TranscriberInfo:
        info = self.models.info
        return transcriber_pb2.TranscriberInfo(
            model=info.model,
            device=info.device,
            compute_type=info.compute_type,
            multilingual=info.multilingual,
            diarization_backend=info.diarization_backend,
            alignment=info.alignment,
            vad=info.vad,
        )


async def _abort(context: grpc.aio.ServicerContext, status: grpc.StatusCode, code: str, message: str) -> None:
    context.set_trailing_metadata(((ERROR_CODE_KEY, code),))
    await context.abort(status, f"{code}: {message}")


def service_entry(models: Models, storage: Storage) -> tuple:
    """The (add_to_server, servicer, name) triple `mediaflow.common.grpc.start_server` takes."""
    return (transcriber_pb2_grpc.add_TranscriberServicer_to_server, TranscriberServicer(models, storage), SERVICE_NAME)

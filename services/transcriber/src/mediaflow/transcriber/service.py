"""One transcription, end to end, shared by queue jobs and gRPC calls: ASR -> diarization ->
analytics. Blocking (runs in a worker thread); `progress` may raise to cancel between batches."""

from __future__ import annotations

import time
from pathlib import Path

from mediaflow.common import metrics
from mediaflow.common.options.transcribe import TranscribeOptions

from .analytics import analytics
from .diarize import NeuralDiarizer, apply_speakers, pyannote_turns
from .model import Models, diarization_backend
from .pipeline import Progress, transcribe_file
from .transcript import Transcript


def run_transcription(
    models: Models, path: Path, options: TranscribeOptions, progress: Progress | None = None, temperature: float = 0.0
) -> Transcript:
    began = time.monotonic()
    try:
        diarize = options.diarize or bool(options.num_speakers or options.min_speakers or options.max_speakers)
        use_pyannote = diarize and diarization_backend(models.settings) == "pyannote"
        collector = NeuralDiarizer() if diarize and not use_pyannote else None

        def asr_progress(fraction: float, stage: str) -> None:
            if progress is not None:
                progress(fraction * (0.85 if diarize else 0.95), stage)

        transcript = transcribe_file(
            models, path, options, progress=asr_progress, sink=collector, temperature=temperature
        )
        if diarize:
            if progress is not None:
                progress(0.88, "diarizing")
            speakers = (options.num_speakers, options.min_speakers, options.max_speakers)
            if use_pyannote:
                with models.device_lock:
                    raw = pyannote_turns(models.settings, str(path), *speakers)
            else:
                assert collector is not None
                raw = collector.turns(*speakers)
            apply_speakers(transcript, raw)
        transcript.analytics = analytics(transcript, summary=options.summary)
        metrics.observe_transcription(transcript.duration, time.monotonic() - began)
        return transcript
    except BaseException:
        models.free_memory()
        raise

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
from .speakers import voice_prints
from .transcript import SpeakerTurn, Transcript
from .translation import check_target, translate


def run_transcription(
    models: Models, path: Path, options: TranscribeOptions, progress: Progress | None = None, temperature: float = 0.0
) -> Transcript:
    began = time.monotonic()
    try:
        diarize = options.diarize or bool(options.num_speakers or options.min_speakers or options.max_speakers)
        use_pyannote = diarize and diarization_backend(models.settings) == "pyannote"
        collector = NeuralDiarizer() if diarize and not use_pyannote else None
        if options.translate_to:
            check_target(models, options)  # before the decoding, not after it

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
            if transcript.range is not None:
                raw = _in_range(raw, transcript.range.start, transcript.range.end, shift=collector is not None)
            labels = apply_speakers(transcript, raw)
            if collector is not None:  # voice prints, to name speakers across files (speakers.py)
                transcript.voices = voice_prints(transcript, collector.prints, labels)
        if options.translate_to:
            if progress is not None:
                progress(0.9, "translating")
            transcript.translation = translate(models, transcript, path, options)
        transcript.analytics = analytics(
            transcript, summary=options.summary, summary_sentences=options.summary_sentences
        )
        metrics.observe_transcription(transcript.duration, time.monotonic() - began)
        return transcript
    except BaseException:
        models.free_memory()
        raise


def _in_range(turns: list[SpeakerTurn], start: float, end: float, shift: bool) -> list[SpeakerTurn]:
    """Speaker turns in absolute times, inside the range transcribed. The offline diarizer was fed
    the range's audio only (its times count from `start`: `shift`); pyannote heard the whole file."""
    out = []
    for turn in turns:
        s, e = (turn.start + start, turn.end + start) if shift else (turn.start, turn.end)
        s, e = max(s, start), min(e, end)
        if e > s:
            out.append(turn.model_copy(update={"start": s, "end": e}))
    return out

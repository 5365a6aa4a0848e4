"""VAD-segmented, batched Whisper over a stream of audio windows.

Why not whisperx's own `transcribe`: it loads the whole file into memory and gives no word times
without a wav2vec2 alignment model (which would be downloaded). Here the audio is decoded in windows
(`audio.windows`); each window gets the pyannote VAD of the whisperx wheel and whisperx's chunk merge
(<= 30 s chunks cut at silences), and its chunks go through faster-whisper's batched decoder with
Whisper's own word timestamps (refined by a local wav2vec2 model when `MEDIAFLOW_ALIGN_MODEL` is set,
see `align.py`). Speech running into a window's end is carried over to the next window,
so no chunk is ever cut mid-word at a window boundary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mediaflow.common.errors import InvalidInput
from mediaflow.common.options.transcribe import TranscribeOptions

from .audio import SAMPLE_RATE, media_duration, windows
from .model import Models
from .transcript import Segment, Transcript, Word

log = logging.getLogger("mediaflow.transcriber")

WINDOW_SECONDS = float(os.environ.get("MEDIAFLOW_TRANSCRIBE_WINDOW", "300"))
CHUNK_SECONDS = 30.0
VAD_ONSET, VAD_OFFSET = 0.5, 0.363
# Whisper's own silence rule: a chunk it is sure holds no speech and decoded with low confidence is
# dropped (this is what keeps music and noise from turning into hallucinated text).
NO_SPEECH_PROB, LOW_LOGPROB = 0.6, -1.0
# Windows whose loudest half second stays below this level (dBFS) skip the VAD model: hours of
# silence or room tone then cost only their decoding.
SILENCE_DBFS = -50.0
# faster-whisper's batched-mode Silero settings. With Silero, chunks are built the faster-whisper way
# (speech regions packed into <= 30 s chunks, silences left out): on a 4-minute long-form mix that
# gave WER 10.9 % where whisperx-style chunks (spans that keep the silences) gave 15.9 %.
SILERO_OPTIONS = {"threshold": 0.5, "min_silence_duration_ms": 160, "speech_pad_ms": 400,
                  "max_speech_duration_s": CHUNK_SECONDS}

Progress = Callable[[float, str], None]


def check_language(models: Models, language: str | None) -> str | None:
    """The language to decode in (None = detect); unsupported codes raise `unsupported_language`."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if not language:
        return None if models.multilingual else "en"
    code = language.lower()
    if code not in _LANGUAGE_CODES:
        raise InvalidInput(f"unsupported language {language!r}", code="unsupported_language")
    if not models.multilingual and code != "en":
        raise InvalidInput(f"the configured model {models.info.model} is English-only; "
                           f"language {language!r} is not supported", code="unsupported_language")
    return code


def speech_chunks(models: Models, audio: np.ndarray) -> list[dict]:
    """VAD on one window: a list of {start, end, segments[(start, end)]} in seconds, chunks <= 30 s
    cut at silences (whisperx's merge)."""
    from whisperx.diarize import Segment as SpeechRegion
    from whisperx.vads import Pyannote, Vad

    if len(audio) < SAMPLE_RATE // 10 or loudest_dbfs(audio) < SILENCE_DBFS:
        return []
    if models.vad_method == "silero":
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        # faster-whisper's bundled Silero (ONNX): ~20x faster than the pyannote model on a CPU
        found = get_speech_timestamps(audio, VadOptions(**SILERO_OPTIONS))
        regions = [SpeechRegion(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE, "UNKNOWN") for r in found]
        return Vad.merge_chunks(regions, CHUNK_SECONDS, onset=VAD_ONSET, offset=VAD_OFFSET) if regions else []
    scores = models.vad({"waveform": Pyannote.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
    return Pyannote.merge_chunks(scores, CHUNK_SECONDS, onset=VAD_ONSET, offset=VAD_OFFSET)


def loudest_dbfs(audio: np.ndarray, block: int = SAMPLE_RATE // 2) -> float:
    usable = len(audio) // block * block
    blocks = audio[:usable].reshape(-1, block) if usable else audio.reshape(1, -1)
    # einsum: the per-block energy without a squared copy of the whole window
    rms = float(np.sqrt(np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / blocks.shape[1]).max())
    return 20 * np.log10(max(rms, 1e-10))


class WindowSink:
    """Gets each window's audio and speech regions (the offline diarizer collects embeddings here)."""

    def add_window(self, audio: np.ndarray, offset: float, speech: list[tuple[float, float]]) -> None: ...


def transcribe_file(models: Models, path: Path | str, options: TranscribeOptions, *,
                    progress: Progress | None = None, sink: WindowSink | None = None,
                    temperature: float = 0.0, batch_size: int | None = None) -> Transcript:
    language = check_language(models, options.language)
    try:
        total = media_duration(path)
    except Exception:
        total = 0.0
    batch_size = batch_size or models.settings.batch_size
    segments: list[Segment] = []
    carry: np.ndarray | None = None
    carry_offset = 0.0
    end_of_audio = 0.0
    for window in windows(path, WINDOW_SECONDS):
        audio, offset = window.samples, window.offset
        if carry is not None:
            audio, offset = np.concatenate([carry, audio]), carry_offset
            carry = None
        np.clip(audio, -1.0, 1.0, out=audio)
        end_of_audio = window.offset + window.duration
        with models.device_lock:
            chunks = speech_chunks(models, audio)
        length = len(audio) / SAMPLE_RATE
        usable = audio
        if not window.last and chunks and chunks[-1]["end"] > length - 1.0:
            # speech runs into the window's end: decode it with the next window instead
            last = chunks.pop()
            cut = int(last["start"] * SAMPLE_RATE)
            carry, carry_offset = audio[cut:].copy(), offset + last["start"]
            usable = audio[:cut]
        if sink is not None:
            sink.add_window(usable, offset, [seg for c in chunks for seg in c["segments"]])
        if chunks:
            language = _decode_window(models, usable, offset, chunks, options, language, segments,
                                      progress, total or end_of_audio, temperature, batch_size)
        if progress is not None:
            progress(min(1.0, end_of_audio / (total or end_of_audio)), "transcribing")
        del audio
    duration = max(total, end_of_audio)
    _tidy_words(segments, duration)
    return Transcript(language=language or "en", duration=duration, task=options.task,
                      model=models.info.model, segments=segments)


def _decode_window(models: Models, audio: np.ndarray, offset: float, chunks: list[dict],
                   options: TranscribeOptions, language: str | None, out: list[Segment],
                   progress: Progress | None, total: float, temperature: float, batch_size: int) -> str | None:
    if models.vad_method == "silero":
        from faster_whisper.vad import VadOptions

        # faster-whisper runs its Silero again on this window and packs the chunks itself (cheap:
        # Silero costs well under 1 % of the decoding), restoring times to the window's clock.
        chunking = {"vad_filter": True, "vad_parameters": VadOptions(**SILERO_OPTIONS)}
    else:
        chunking = {"vad_filter": False, "clip_timestamps": [{"start": c["start"], "end": c["end"]} for c in chunks]}
    with models.device_lock:
        generator, info = models.batched.transcribe(
            audio, language=language, task=options.task, batch_size=batch_size,
            word_timestamps=options.word_timestamps, initial_prompt=options.prompt or None,
            temperature=temperature, multilingual=False, **chunking,
        )
    language = language or info.language  # detected once, on the first speech, then kept
    first_new = len(out)
    # The generator decodes one batch per step. The device lock is taken per batch (a gRPC request
    # waits for one batch, not a whole window), and progress (which raises on cancel) runs between.
    while True:
        with models.device_lock:
            seg = next(generator, None)
        if seg is None:
            break
        if progress is not None:
            progress(min(1.0, (offset + seg.end) / total), "transcribing")
        text = seg.text.strip()
        if not text or (seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB):
            continue
        words = [Word(text=w.word.strip(), start=offset + w.start, end=offset + w.end,
                      probability=float(w.probability)) for w in (seg.words or []) if w.word.strip()]
        out.append(Segment(id=len(out), start=offset + seg.start, end=offset + seg.end, text=text,
                           words=words, avg_logprob=float(seg.avg_logprob),
                           no_speech_prob=float(seg.no_speech_prob)))
    if models.aligner is not None:
        for segment in out[first_new:]:
            with models.device_lock:  # per segment, like the decoding batches
                models.aligner.align_segment(segment, audio, offset)
    return language


def _tidy_words(segments: list[Segment], duration: float) -> None:
    """Word times monotonic and inside the audio; segment bounds follow their words."""
    previous_end = 0.0
    for seg in segments:
        for word in seg.words:
            word.start = min(max(word.start, previous_end), duration)
            word.end = min(max(word.end, word.start), duration)
            previous_end = word.end
        if seg.words:
            seg.start, seg.end = seg.words[0].start, seg.words[-1].end
        seg.start, seg.end = max(0.0, min(seg.start, duration)), max(0.0, min(seg.end, duration))

"""Long-form Whisper that keeps every word: VAD chunks, batched decoding, and a coverage guard.

- The media is decoded in windows (`audio.windows`), so memory does not grow with its length. Speech
  running into a window's end is carried over to the next window: no chunk is cut mid-word there.
- A VAD (Silero ONNX from the faster-whisper wheel by default, or the pyannote model of the whisperx
  wheel) finds the speech; whisperx's merge groups it into chunks of <= 30 s cut at silences.
- The chunks are decoded in batches by faster-whisper's batched decoder, each from the log-mel of the
  chunk **zero-padded to 30 s of audio**, the input Whisper was trained on. faster-whisper's own batched
  `transcribe` pads the *features* with zeros instead (an out-of-range value, not silence); on long
  recordings Whisper then stops early inside a chunk and whole sentences vanish (long_dev_en: WER
  0.134 and 572 of 603 words, against 0.073 and 608 words with the audio padded).
- The coverage guard: a chunk whose speech the words do not cover (a speech region of >= 1 s without a
  word, or a word rate far below speech's) is decoded again in windows of <= 10 s, and the result that
  covers more speech is kept. `Transcript.coverage` records what was found.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mediaflow.common.errors import InvalidInput
from mediaflow.common.options.transcribe import TranscribeOptions

from .audio import SAMPLE_RATE, WindowSink, media_duration, windows
from .model import Asr, Models
from .transcript import Coverage, Notice, Segment, TimeRange, Transcript, Word

log = logging.getLogger("mediaflow.transcriber")

CHUNK_SECONDS = 30.0
REDECODE_SECONDS = 10.0
VAD_ONSET, VAD_OFFSET = 0.5, 0.363
# Whisper's own silence rule: a chunk it is sure holds no speech and decoded with low confidence is
# dropped (this is what keeps music and noise from turning into hallucinated text).
NO_SPEECH_PROB, LOW_LOGPROB = 0.6, -1.0
# Windows whose loudest half second stays below this level (dBFS) skip the VAD model: hours of
# silence or room tone then cost only their decoding.
SILENCE_DBFS = -50.0
# faster-whisper's batched-mode Silero settings; regions stay <= one chunk long.
SILERO_OPTIONS = {"threshold": 0.5, "min_silence_duration_ms": 160, "speech_pad_ms": 400}
# The coverage guard. A speech region this long must hold a word; words are given this much slack
# (their cross-attention times are approximate and VAD regions carry padding). Read speech runs at
# 2.5-3 words/s; a chunk with >= GUARD_MIN_SPEECH s of speech below MIN_WORDS_PER_SECOND lost text.
# Fitted on the fit set in bench/accuracy.py (not on the files the bench reports).
MIN_GUARDED_REGION = 1.0
WORD_SLACK = 0.5
MIN_WORDS_PER_SECOND = 1.0
GUARD_MIN_SPEECH = 3.0

Progress = Callable[[float, str], None]
Span = tuple[float, float]


def check_language(models: Models, language: str | None, task: str = "transcribe") -> str | None:
    """The language to decode in (None = detect); codes no loaded model serves raise
    `unsupported_language`, task=translate without a multilingual model `unsupported_task`."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if task == "translate" and models.multilingual_asr is None:
        raise InvalidInput(
            f"task=translate needs a multilingual model; {models.info.model} is English-only",
            code="unsupported_task",
        )
    if not language:
        return None if models.multilingual_asr is not None else "en"
    code = language.lower()
    if code not in _LANGUAGE_CODES:
        raise InvalidInput(f"unsupported language {language!r}", code="unsupported_language")
    if models.asr_for(code, task) is None:
        raise InvalidInput(
            f"the configured model {models.info.model} is English-only; language {language!r} is not supported",
            code="unsupported_language",
        )
    return code


# A detected language below this probability is reported with a `language_uncertain` warning.
UNCERTAIN_LANGUAGE = 0.5


@dataclass
class Chunk:
    """A stretch of a window decoded as one Whisper input, with the VAD speech regions inside it
    (seconds from the window's start)."""

    start: float
    end: float
    speech: list[Span]
    segments: list[Segment] = field(default_factory=list)

    @property
    def speech_seconds(self) -> float:
        return sum(e - s for s, e in self.speech)

    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


def speech_regions(models: Models, audio: np.ndarray, max_seconds: float = CHUNK_SECONDS) -> list[Span]:
    """VAD speech regions of `audio` in seconds, none longer than `max_seconds`."""
    if len(audio) < SAMPLE_RATE // 10 or loudest_dbfs(audio) < SILENCE_DBFS:
        return []
    if models.vad_method == "silero" or max_seconds < CHUNK_SECONDS:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        # faster-whisper's bundled Silero (ONNX): ~20x faster than the pyannote model on a CPU
        found = get_speech_timestamps(audio, VadOptions(**SILERO_OPTIONS, max_speech_duration_s=max_seconds))
        return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]
    from whisperx.vads import Pyannote

    scores = models.vad({"waveform": Pyannote.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
    merged = Pyannote.merge_chunks(scores, CHUNK_SECONDS, onset=VAD_ONSET, offset=VAD_OFFSET)
    return [tuple(seg) for chunk in merged for seg in chunk["segments"]]


def group_chunks(regions: list[Span], max_seconds: float) -> list[Chunk]:
    """whisperx's merge: consecutive regions grouped into chunks of <= `max_seconds`, cut at silences."""
    from whisperx.diarize import Segment as Region
    from whisperx.vads import Vad

    if not regions:
        return []
    merged = Vad.merge_chunks([Region(s, e, "") for s, e in regions], max_seconds, onset=VAD_ONSET, offset=VAD_OFFSET)
    return [Chunk(c["start"], c["end"], list(c["segments"])) for c in merged]


def loudest_dbfs(audio: np.ndarray, block: int = SAMPLE_RATE // 2) -> float:
    usable = len(audio) // block * block
    blocks = audio[:usable].reshape(-1, block) if usable else audio.reshape(1, -1)
    # einsum: the per-block energy without a squared copy of the whole window
    rms = float(np.sqrt(np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / blocks.shape[1]).max())
    return 20 * np.log10(max(rms, 1e-10))


class Decoder:
    """Batched Whisper decoding of chunks for one transcription (its options, tokenizer, language)."""

    def __init__(
        self, models: Models, options: TranscribeOptions, language: str | None, temperature: float, batch_size: int
    ) -> None:
        self.models = models
        self.options = options
        self.language = language
        self.language_probability: float | None = None  # set when the language was detected
        self.warnings: list[Notice] = []
        self.temperature = temperature
        self.batch_size = batch_size
        self.asr = models.asr  # the model that decodes, chosen once the language is known
        self._decoding = None  # faster-whisper TranscriptionOptions, built once the language is known
        self._tokenizer = None

    def features(self, audio: np.ndarray, chunk: Chunk, asr: Asr | None = None) -> np.ndarray:
        extractor = (asr or self.asr).whisper.feature_extractor
        samples = audio[int(chunk.start * SAMPLE_RATE) : int(chunk.end * SAMPLE_RATE)][: extractor.n_samples]
        padded = np.pad(samples, (0, extractor.n_samples - len(samples)))  # silence, as Whisper was trained
        return extractor(padded)[..., : extractor.nb_max_frames]

    def decode(self, audio: np.ndarray, chunks: list[Chunk], progress: Callable[[Chunk], None] | None = None) -> None:
        """Fill each chunk's `segments` (times in the window's seconds), one batch at a time."""
        for first in range(0, len(chunks), self.batch_size):
            batch = chunks[first : first + self.batch_size]
            self._prepare(audio, batch[0])
            features = np.stack([self.features(audio, c) for c in batch])
            with self.models.device_lock:  # per batch: a gRPC request waits for one batch, not a window
                self.asr.batched.last_speech_timestamp = batch[0].start
                outputs = self.asr.batched.forward(
                    features,
                    self._tokenizer,
                    [{"offset": c.start, "duration": c.end - c.start, "segments": []} for c in batch],
                    self._decoding,
                )
            for chunk, output in zip(batch, outputs, strict=True):
                chunk.segments = [s for s in map(_segment, output) if s is not None]
                if progress is not None:
                    progress(chunk)  # raises on cancel

    def _prepare(self, audio: np.ndarray, first: Chunk) -> None:
        if self._decoding is not None:
            return
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        if self.language is None:  # detected once, on the first speech, by the multilingual model
            detector = self.models.multilingual_asr
            assert detector is not None  # check_language: no language and no detector means English
            with self.models.device_lock:
                language, probability, _ = detector.whisper.detect_language(
                    features=self.features(audio, first, detector)
                )
            self.language, self.language_probability = language, round(float(probability), 3)
            if probability < UNCERTAIN_LANGUAGE:
                self.warnings.append(
                    Notice(
                        code="language_uncertain",
                        message=f"the language was detected as {language!r} with probability {probability:.2f}; "
                        "pass options.language if that is wrong",
                    )
                )
        elif not self.options.language and self.models.multilingual_asr is None:
            self.warnings.append(
                Notice(
                    code="language_not_detected",
                    message=f"the model {self.models.info.model} is English-only and no multilingual model is "
                    "configured: the speech was taken to be English",
                )
            )
        asr = self.models.asr_for(self.language, self.options.task)
        if asr is None:  # detected a language only the (absent) multilingual model could decode
            raise InvalidInput(f"no loaded model decodes {self.language!r}", code="unsupported_language")
        self.asr = asr
        whisper = asr.whisper
        self._tokenizer = Tokenizer(
            whisper.hf_tokenizer, asr.multilingual, task=self.options.task, language=self.language
        )
        self._decoding = TranscriptionOptions(
            beam_size=5,
            best_of=5,
            patience=1,
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            log_prob_threshold=LOW_LOGPROB,
            no_speech_threshold=NO_SPEECH_PROB,
            compression_ratio_threshold=2.4,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[self.temperature],
            initial_prompt=self.options.prompt or None,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(self._tokenizer, [-1]),
            without_timestamps=True,
            max_initial_timestamp=0.0,
            word_timestamps=True,
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False,
            max_new_tokens=None,
            clip_timestamps=[],
            hallucination_silence_threshold=None,
            hotwords=None,
        )

    def language_or_english(self) -> str:
        return self.language or "en"


def _segment(output: dict) -> Segment | None:
    text = output["text"].strip()
    if not text or (output["no_speech_prob"] > NO_SPEECH_PROB and output["avg_logprob"] < LOW_LOGPROB):
        return None
    words = [
        Word(text=w["word"].strip(), start=w["start"], end=w["end"], probability=float(w["probability"]))
        for w in output.get("words") or []
        if w["word"].strip()
    ]
    return Segment(
        id=0,
        start=output["start"],
        end=output["end"],
        text=text,
        words=words,
        avg_logprob=float(output["avg_logprob"]),
        no_speech_prob=float(output["no_speech_prob"]),
    )


def covered_seconds(speech: list[Span], words: list[Word]) -> float:
    """Seconds of `speech` within WORD_SLACK of a word."""
    spans = sorted((w.start - WORD_SLACK, w.end + WORD_SLACK) for w in words)
    total = 0.0
    for start, end in speech:
        cursor = start
        for ws, we in spans:
            if we <= cursor:
                continue
            if ws >= end:
                break
            total += min(we, end) - max(ws, cursor)
            cursor = min(we, end)
        # (spans are sorted by start, and overlaps are only counted once through `cursor`)
    return total


def lost_text(chunk: Chunk) -> bool:
    """True when the chunk's words leave speech uncovered: the guard decodes it again."""
    words = chunk.words()
    for start, end in chunk.speech:
        if end - start >= MIN_GUARDED_REGION and covered_seconds([(start, end)], words) == 0.0:
            return True
    seconds = chunk.speech_seconds
    return seconds >= GUARD_MIN_SPEECH and len(words) / seconds < MIN_WORDS_PER_SECOND


def guard(models: Models, decoder: Decoder, audio: np.ndarray, chunks: list[Chunk]) -> int:
    """Decode chunks that lost text again in <= REDECODE_SECONDS pieces; keep what covers more speech.
    Returns how many chunks were decoded again."""
    redecoded = 0
    for chunk in [c for c in chunks if lost_text(c)]:
        piece_audio = audio[int(chunk.start * SAMPLE_RATE) : int(chunk.end * SAMPLE_RATE)]
        with models.device_lock:
            regions = speech_regions(models, piece_audio, REDECODE_SECONDS)
        pieces = [
            replace(
                p,
                start=p.start + chunk.start,
                end=p.end + chunk.start,
                speech=[(s + chunk.start, e + chunk.start) for s, e in p.speech],
            )
            for p in group_chunks(regions, REDECODE_SECONDS)
        ]
        if not pieces:
            continue
        decoder.decode(audio, pieces)
        before = covered_seconds(chunk.speech, chunk.words())
        after = covered_seconds(chunk.speech, [w for p in pieces for w in p.words()])
        redecoded += 1
        log.info(
            "coverage guard: chunk %.1f-%.1f s covered %.1f s of %.1f s, %.1f s when decoded in %d pieces",
            chunk.start,
            chunk.end,
            before,
            chunk.speech_seconds,
            after,
            len(pieces),
        )
        if after > before:
            chunk.segments = [s for p in pieces for s in p.segments]
    return redecoded


def transcribe_file(
    models: Models,
    path: Path | str,
    options: TranscribeOptions,
    *,
    progress: Progress | None = None,
    sink: WindowSink | None = None,
    temperature: float = 0.0,
    batch_size: int | None = None,
) -> Transcript:
    try:
        total = media_duration(path)
    except Exception:
        total = 0.0
    start = options.start or 0.0
    if total and start >= total:
        raise InvalidInput(
            f"start {start:g} s is not before the end of the media ({total:.3f} s)", code="invalid_options"
        )
    end = options.end if options.end is not None and (not total or options.end < total) else None
    # progress runs over the range; without one, over the media
    span = ((end if end is not None else total) - start) if (end is not None or total) else 0.0
    decoder = Decoder(
        models,
        options,
        check_language(models, options.language, options.task),
        temperature,
        batch_size or models.settings.batch_size,
    )
    segments: list[Segment] = []
    coverage = Coverage()
    carry: np.ndarray | None = None
    carry_offset = 0.0
    end_of_audio = 0.0
    for window in windows(path, models.settings.transcribe_window, start=start, end=end):
        audio, offset = window.samples, window.offset
        if carry is not None:
            audio, offset = np.concatenate([carry, audio]), carry_offset
            carry = None
        np.clip(audio, -1.0, 1.0, out=audio)
        end_of_audio = window.offset + window.duration
        with models.device_lock:
            chunks = group_chunks(speech_regions(models, audio), CHUNK_SECONDS)
        usable = audio
        if not window.last and chunks and chunks[-1].end > len(audio) / SAMPLE_RATE - 1.0:
            # speech runs into the window's end: decode it with the next window instead
            cut = chunks.pop().start
            carry, carry_offset = audio[int(cut * SAMPLE_RATE) :].copy(), offset + cut
            usable = audio[: int(cut * SAMPLE_RATE)]
        if sink is not None:
            sink.add_window(usable, offset, [s for c in chunks for s in c.speech])

        def chunk_done(chunk: Chunk, offset: float = offset, scale: float = span or end_of_audio - start) -> None:
            if progress is not None:
                progress(min(1.0, (offset - start + chunk.end) / scale), "transcribing")

        decoder.decode(usable, chunks, chunk_done)
        coverage.redecoded_windows += guard(models, decoder, usable, chunks)
        first_new = len(segments)
        for chunk in chunks:
            coverage.speech_seconds += chunk.speech_seconds
            coverage.covered_speech_seconds += covered_seconds(chunk.speech, chunk.words())
            segments.extend(_shifted(s, offset) for s in chunk.segments)
        if models.aligner is not None:
            for segment in segments[first_new:]:
                with models.device_lock:  # per segment, like the decoding batches
                    models.aligner.align_segment(segment, usable, offset)
        if progress is not None:
            progress(min(1.0, (end_of_audio - start) / (span or end_of_audio - start)), "transcribing")
        del audio, usable
    duration = max(total, end_of_audio)
    for i, segment in enumerate(segments):
        segment.id = i
    ranged = bool(options.start) or options.end is not None
    _tidy_words(segments, duration, start, end_of_audio if ranged else duration)
    coverage.speech_seconds = round(coverage.speech_seconds, 2)
    coverage.covered_speech_seconds = round(min(coverage.covered_speech_seconds, coverage.speech_seconds), 2)
    return Transcript(
        language=decoder.language_or_english(),
        language_probability=decoder.language_probability,
        warnings=decoder.warnings,
        duration=duration,
        task=options.task,
        model=decoder.asr.name,
        segments=segments,
        coverage=coverage,
        range=TimeRange(start=start, end=end_of_audio) if ranged else None,
    )


def _shifted(segment: Segment, offset: float) -> Segment:
    for word in segment.words:
        word.start, word.end = word.start + offset, word.end + offset
    segment.start, segment.end = segment.start + offset, segment.end + offset
    return segment


def _tidy_words(segments: list[Segment], duration: float, low: float = 0.0, high: float | None = None) -> None:
    """Word times monotonic and inside the audio (inside [low, high], the range transcribed);
    segment bounds follow their words."""
    high = duration if high is None else min(high, duration)
    previous_end = low
    for seg in segments:
        for word in seg.words:
            word.start = min(max(word.start, previous_end), high)
            word.end = min(max(word.end, word.start), high)
            previous_end = word.end
        if seg.words:
            seg.start, seg.end = seg.words[0].start, seg.words[-1].end
        seg.start, seg.end = max(low, min(seg.start, high)), max(low, min(seg.end, high))

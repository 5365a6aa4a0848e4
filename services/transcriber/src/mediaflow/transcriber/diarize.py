"""Who spoke when, pluggable.

- `pyannote`: a pyannote.audio pipeline, when `MEDIAFLOW_DIARIZATION_PIPELINE` (a local path) or a
  Hugging Face token (`MEDIAFLOW_HF_TOKEN`) is configured: the production choice.
- `resemblyzer` (offline default): speech regions from the VAD the ASR already ran, Resemblyzer
  d-vectors (its wheel ships its model) over 1.6 s partials every 0.25 s, and clustering
  (spectral with an eigengap estimate of the speaker count, bounded by min/max_speakers, after a
  one-speaker check, see `single_speaker`).
  Embeddings are collected window by window, so multi-hour media stays in bounded memory.

Either way, speakers are then given to words (`whisperx.assign_word_speakers`) and the turns are
re-derived from the words, so every turn boundary is a word boundary.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from mediaflow.common.settings import Settings

from .audio import SAMPLE_RATE
from .pipeline import WindowSink
from .transcript import Segment, SpeakerTurn, Transcript

log = logging.getLogger("mediaflow.transcriber")

PARTIALS_PER_SECOND = 4.0
MIN_REGION_SECONDS = 0.3
# Resemblyzer's mel input is not log-scaled, so loudness moves its embeddings: regions are brought to
# the level its model was trained on (its own `preprocess_wav` target) before embedding.
TARGET_DBFS = -30.0
# Automatic counting keeps one speaker unless the best two-way split of the partials finds two voices
# that are both distinct (centroid cosine below this) and both substantial (the smaller one speaks at
# least MIN_SPEAKER_SECONDS). Eigengaps cannot tell "one speaker" from "two", so this check comes first.
# Measured (docs/transcriber.md, two-speaker pyannote_sample.wav vs one-speaker fixtures): centroid
# cosine 0.883 vs 0.946 (sonnet); smaller side 9.9 s vs 4.4 s (jfk.flac, whose noisy first phrase is
# as far from the rest as pyannote's two voices are: only the amount of speech tells them apart).
SAME_SPEAKER_CENTROID_COSINE = 0.915
MIN_SPEAKER_SECONDS = 7.0


def backend_name(settings: Settings) -> str:
    return "pyannote" if (settings.diarization_pipeline or settings.hf_token) else "resemblyzer"


_encoder = None
_encoder_lock = threading.Lock()


def voice_encoder():
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder("cpu", verbose=False)
        return _encoder


@dataclass
class EmbeddingCollector(WindowSink):
    """Resemblyzer partial embeddings with the time span each one stands for."""

    embeddings: list[np.ndarray] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)

    def add_window(self, audio: np.ndarray, offset: float, speech: list[tuple[float, float]]) -> None:
        from resemblyzer.audio import normalize_volume

        encoder = voice_encoder()
        half_step = 0.5 / PARTIALS_PER_SECOND
        for start, end in speech:
            if end - start < MIN_REGION_SECONDS:
                continue
            region = audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]
            if not np.any(region):  # digital silence: nothing to normalise or embed
                continue
            region = normalize_volume(region, TARGET_DBFS)
            _, partials, slices = encoder.embed_utterance(region, return_partials=True,
                                                          rate=PARTIALS_PER_SECOND, min_coverage=0.5)
            for emb, sl in zip(partials, slices, strict=True):
                center = start + (sl.start + sl.stop) / 2 / SAMPLE_RATE
                span = (max(start, center - half_step), min(end, center + half_step))
                if len(slices) == 1:
                    span = (start, end)
                elif sl is slices[0]:
                    span = (start, span[1])
                elif sl is slices[-1]:
                    span = (span[0], end)
                if span[1] > span[0]:
                    self.embeddings.append(emb)
                    self.spans.append((offset + span[0], offset + span[1]))

    def turns(self, num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> list[SpeakerTurn]:
        if not self.embeddings:
            return []
        durations = np.array([end - start for start, end in self.spans])
        labels = cluster(np.stack(self.embeddings), durations, num_speakers, min_speakers, max_speakers)
        labels = _smooth(labels)
        return [SpeakerTurn(speaker=str(lab), start=s, end=e) for lab, (s, e) in zip(labels, self.spans, strict=True)]


def cluster(emb: np.ndarray, durations: np.ndarray, num_speakers: int | None, min_speakers: int | None,
            max_speakers: int | None) -> np.ndarray:
    """Speaker label per partial; `durations` are the seconds each partial stands for."""
    n = len(emb)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-9)
    if num_speakers:
        lo = hi = num_speakers
    else:
        lo, hi = min_speakers or 1, max_speakers or 8
    hi = max(1, min(hi, n))
    lo = max(1, min(lo, hi))
    if hi == 1 or n < 3:
        return np.zeros(n, dtype=int)
    affinity = np.clip(emb @ emb.T, 0.0, 1.0)
    if lo == 1 and single_speaker(emb, durations, spectral_labels(affinity, 2)):
        return np.zeros(n, dtype=int)
    k = lo if lo == hi else _eigengap(affinity, max(2, lo), hi)
    if k <= 1:
        return np.zeros(n, dtype=int)
    return spectral_labels(affinity, k)


def spectral_labels(affinity: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0,
                              assign_labels="cluster_qr").fit_predict(affinity)


@dataclass
class SplitEvidence:
    """How far the best two-way split of a recording's partials is from being one voice."""

    centroid_cosine: float
    minority_seconds: float

    @property
    def one_speaker(self) -> bool:
        return self.centroid_cosine >= SAME_SPEAKER_CENTROID_COSINE or self.minority_seconds < MIN_SPEAKER_SECONDS


def split_evidence(emb: np.ndarray, durations: np.ndarray, labels: np.ndarray) -> SplitEvidence:
    """`emb` unit-normalised partials, `labels` a two-way clustering of them."""
    if len(np.unique(labels)) < 2:
        return SplitEvidence(centroid_cosine=1.0, minority_seconds=0.0)
    centroids = [emb[labels == k].mean(axis=0) for k in (0, 1)]
    a, b = (c / np.linalg.norm(c).clip(1e-9) for c in centroids)
    seconds = [float(durations[labels == k].sum()) for k in (0, 1)]
    return SplitEvidence(centroid_cosine=float(a @ b), minority_seconds=min(seconds))


def single_speaker(emb: np.ndarray, durations: np.ndarray, labels: np.ndarray) -> bool:
    evidence = split_evidence(emb, durations, labels)
    log.debug("two-way split: centroid cosine %.3f, smaller speaker %.1f s", evidence.centroid_cosine,
              evidence.minority_seconds)
    return evidence.one_speaker


def _eigengap(affinity: np.ndarray, lo: int, hi: int) -> int:
    degree = affinity.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(degree.clip(1e-9))
    laplacian = np.eye(len(affinity)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    eigenvalues = np.sort(np.linalg.eigvalsh(laplacian))
    gaps = np.diff(eigenvalues[: hi + 1])  # gaps[k-1] = lambda_k - lambda_{k-1}: k clusters
    candidates = range(lo, hi + 1)
    return max(candidates, key=lambda k: gaps[k - 1])


def _smooth(labels: np.ndarray, width: int = 5) -> np.ndarray:
    """Majority vote over neighbouring partials: removes one-partial speaker flips."""
    if len(labels) < width:
        return labels
    half = width // 2
    out = labels.copy()
    for i in range(len(labels)):
        window = labels[max(0, i - half): i + half + 1]
        values, counts = np.unique(window, return_counts=True)
        out[i] = values[np.argmax(counts)]
    return out


def pyannote_turns(settings: Settings, path: str, num_speakers: int | None, min_speakers: int | None,
                   max_speakers: int | None) -> list[SpeakerTurn]:
    """The production backend. Only runs when a pipeline path or a token was configured."""
    from pyannote.audio import Pipeline

    source = settings.diarization_pipeline or "pyannote/speaker-diarization-community-1"
    pipeline = Pipeline.from_pretrained(source, token=settings.hf_token or None)
    output = pipeline(path, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers)
    annotation = getattr(output, "speaker_diarization", output)
    return [SpeakerTurn(speaker=str(label), start=seg.start, end=seg.end)
            for seg, _, label in annotation.itertracks(yield_label=True)]


def apply_speakers(transcript: Transcript, raw_turns: list[SpeakerTurn]) -> None:
    """Give every word a speaker, split segments at speaker changes, and derive the final turns
    from the words (so turns start and end on word boundaries). Labels become SPEAKER_00, ... in
    order of first appearance."""
    import pandas as pd
    from whisperx.diarize import assign_word_speakers

    if not raw_turns or not transcript.segments:
        return
    frame = pd.DataFrame([t.model_dump() for t in raw_turns])
    result = {"segments": [{"start": s.start, "end": s.end,
                            "words": [{"start": w.start, "end": w.end} for w in s.words]}
                           for s in transcript.segments]}
    assign_word_speakers(frame, result, fill_nearest=True)
    names: dict[str, str] = {}
    for seg, assigned in zip(transcript.segments, result["segments"], strict=True):
        fallback = assigned.get("speaker")
        for word, aw in zip(seg.words, assigned["words"], strict=True):
            raw = aw.get("speaker") or fallback or raw_turns[0].speaker
            word.speaker = names.setdefault(raw, f"SPEAKER_{len(names):02d}")
        if not seg.words and fallback:
            seg.speaker = names.setdefault(fallback, f"SPEAKER_{len(names):02d}")
    transcript.segments = _split_by_speaker(transcript.segments)
    transcript.speakers = sorted(set(names.values()))
    transcript.turns = []
    for seg in transcript.segments:
        if transcript.turns and transcript.turns[-1].speaker == seg.speaker:
            transcript.turns[-1].end = seg.end
        elif seg.speaker:
            transcript.turns.append(SpeakerTurn(speaker=seg.speaker, start=seg.start, end=seg.end))


def _split_by_speaker(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if not seg.words:
            out.append(seg.model_copy(update={"id": len(out)}))
            continue
        run = [seg.words[0]]
        for word in [*seg.words[1:], None]:
            if word is not None and word.speaker == run[-1].speaker:
                run.append(word)
                continue
            out.append(Segment(id=len(out), start=run[0].start, end=run[-1].end,
                               text=" ".join(w.text for w in run), words=run, speaker=run[0].speaker,
                               avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob))
            if word is not None:
                run = [word]
    return out

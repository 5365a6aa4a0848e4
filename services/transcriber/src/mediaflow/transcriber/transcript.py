"""The transcript model every stage shares (ASR -> diarization -> captions/analytics -> artifacts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Word(BaseModel):
    text: str
    start: float
    end: float
    probability: float = 1.0
    speaker: str | None = None


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)
    speaker: str | None = None
    speaker_name: str | None = None  # the speaker's name, when enrolled (matched) or renamed
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


class SpeakerTurn(BaseModel):
    speaker: str
    start: float
    end: float


class Voice(BaseModel):
    """One diarized speaker's voice print and, when known, its name (speakers.py)."""

    label: str  # SPEAKER_xx
    seconds: float  # speech the diarizer heard from this speaker
    name: str | None = None
    similarity: float | None = None  # cosine similarity to the enrolled voice; None when named by hand
    speaker_id: str | None = None  # the enrolled speaker (registry id) it matched or was enrolled as
    # unit-normalised speaker embedding; only in speakers.json, not in transcript.json
    embedding: list[float] = Field(default_factory=list, exclude=True)


class Coverage(BaseModel):
    """How much of the detected speech the words cover (the ASR coverage guard's account)."""

    speech_seconds: float = 0.0
    covered_speech_seconds: float = 0.0
    redecoded_windows: int = 0


class Notice(BaseModel):
    """A warning about a result that may be wrong (e.g. `language_uncertain`), in transcript.json and
    the job result."""

    code: str
    message: str


class TranslatedSegment(BaseModel):
    start: float
    end: float
    text: str


class Translation(BaseModel):
    """The transcript in `options.translate_to`: segments with times (captions are built from them)."""

    language: str
    backend: str  # which translation backend made it (translation.py)
    segments: list[TranslatedSegment] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()


class TimeRange(BaseModel):
    """The part of the media transcribed (options start/end), in seconds from the media's start."""

    start: float
    end: float


class Transcript(BaseModel):
    language: str
    # how sure language ID was of `language`; None when the language was given (or assumed: English)
    language_probability: float | None = None
    duration: float
    task: str = "transcribe"
    model: str = ""
    segments: list[Segment] = Field(default_factory=list)
    speakers: list[str] = Field(default_factory=list)
    turns: list[SpeakerTurn] = Field(default_factory=list)  # runs of words by one speaker
    # who spoke when as the diarizer heard it (overlaps and speech without words included), with the
    # same SPEAKER_xx labels as the words; written as speakers.rttm
    diarization: list[SpeakerTurn] = Field(default_factory=list)
    analytics: dict[str, Any] = Field(default_factory=dict)
    coverage: Coverage = Field(default_factory=Coverage)
    range: TimeRange | None = None  # set when only part of the media was transcribed
    voices: list[Voice] = Field(default_factory=list)  # per speaker, with the offline diarizer
    warnings: list[Notice] = Field(default_factory=list)
    translation: Translation | None = None  # with options.translate_to

    def speaker_display(self, label: str | None) -> str | None:
        """What captions call a speaker: its name when known, else its label."""
        names = {v.label: v.name for v in self.voices if v.name}
        return names.get(label, label) if label else label

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

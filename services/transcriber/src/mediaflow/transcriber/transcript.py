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
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


class SpeakerTurn(BaseModel):
    speaker: str
    start: float
    end: float


class Coverage(BaseModel):
    """How much of the detected speech the words cover (the ASR coverage guard's account)."""

    speech_seconds: float = 0.0
    covered_speech_seconds: float = 0.0
    redecoded_windows: int = 0


class TimeRange(BaseModel):
    """The part of the media transcribed (options start/end), in seconds from the media's start."""

    start: float
    end: float


class Transcript(BaseModel):
    language: str
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

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

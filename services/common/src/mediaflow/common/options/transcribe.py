"""Options of `transcribe` jobs (owned by the transcriber; validated by the gateway too)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CaptionFormat = Literal["srt", "vtt", "scc", "ass", "json", "txt"]
ALL_FORMATS: list[CaptionFormat] = ["srt", "vtt", "scc", "ass", "json", "txt"]


class CaptionRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chars_per_line: int = Field(42, ge=10, le=80)
    max_lines: int = Field(2, ge=1, le=4)
    max_cps: float = Field(17.0, gt=0, le=60)
    min_duration: float = Field(1.0, ge=0.1, le=10)
    max_duration: float = Field(7.0, ge=0.5, le=30)
    speaker_labels: bool = False
    break_on_speaker_change: bool = True
    karaoke: bool = False  # ASS word highlighting

    @model_validator(mode="after")
    def _durations(self) -> CaptionRules:
        if self.min_duration > self.max_duration:
            raise ValueError("min_duration must not exceed max_duration")
        return self


class TranscribeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(None, min_length=2, max_length=8)  # None = detect
    task: Literal["transcribe", "translate"] = "transcribe"
    # a second language: the transcript's translation (transcript.json) and captions in it (docs/transcriber.md)
    translate_to: str | None = Field(None, min_length=2, max_length=8)
    bilingual: bool = False  # with translate_to: each caption cue in both languages, original first
    diarize: bool = False
    num_speakers: int | None = Field(None, ge=1, le=32)
    min_speakers: int | None = Field(None, ge=1, le=32)
    max_speakers: int | None = Field(None, ge=1, le=32)
    word_timestamps: bool = True
    prompt: str | None = Field(None, max_length=2000)
    formats: list[CaptionFormat] = Field(default_factory=lambda: list(ALL_FORMATS))
    captions: CaptionRules = Field(default_factory=CaptionRules)
    summary: bool = True
    summary_sentences: int = Field(3, ge=1, le=20)  # length of the extractive summary
    vocabulary: bool = False  # the vocabulary.json artifact (lemma, count, first_at, difficulty)
    # transcribe only [start, end) of the media (seconds); times in every output stay absolute
    start: float | None = Field(None, ge=0, allow_inf_nan=False)
    end: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _speakers(self) -> TranscribeOptions:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self

    @model_validator(mode="after")
    def _range(self) -> TranscribeOptions:
        if self.end is not None and self.end <= (self.start or 0.0):
            raise ValueError("end must be greater than start")
        return self

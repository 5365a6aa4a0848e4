"""Options of `compose` and `caption` jobs (owned by the compositor; validated by the gateway too)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .transcribe import TranscribeOptions

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


class MediaInput(BaseModel):
    """Names media: an uploaded `media_id`, a path under an allow-listed root, or a URL."""

    model_config = ConfigDict(extra="forbid")

    media_id: str | None = None
    path: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MediaInput:
        if sum(v is not None for v in (self.media_id, self.path, self.url)) != 1:
            raise ValueError("name the media with exactly one of media_id, path, url")
        return self


class Trim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(0.0, ge=0)
    end: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Trim:
        if self.end is not None and self.end <= self.start:
            raise ValueError("trim.end must be after trim.start")
        return self


class Logo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    media_id: str | None = None
    path: str | None = None
    position: Position = "top-right"
    scale: float = Field(0.12, gt=0, le=1)
    margin: int = Field(24, ge=0, le=1000)
    opacity: float = Field(1.0, ge=0, le=1)


class TextAnimation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: list[str] = Field(min_length=1, max_length=50)
    start: float = Field(0.5, ge=0)
    letter_delay: float = Field(0.05, ge=0, le=2)
    font: str = "DejaVu Sans"
    size: int = Field(72, ge=8, le=400)
    color: str = Field("&H0000FFFF", pattern=r"^&H[0-9A-Fa-f]{6,8}$")  # ASS colour, default yellow
    bold: bool = True


class TimelineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["intro", "video", "image", "transition", "outro"]
    media_id: str | None = None
    path: str | None = None
    trim: Trim = Field(default_factory=Trim)
    duration: float | None = Field(None, gt=0, le=3600)
    logo: Logo | None = None
    text: TextAnimation | None = None


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Literal["1280x720", "1920x1080", "3840x2160"] = "1920x1080"
    fps: int = Field(30, ge=1, le=60)
    encoder: Literal["auto", "nvenc", "x264"] = "auto"
    quality: Literal["draft", "standard", "high"] = "high"
    loudnorm: bool = False


class CaptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    mode: Literal["burn", "soft", "both"] = "burn"


class ComposeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: Output = Field(default_factory=Output)
    items: list[TimelineItem] = Field(min_length=1, max_length=500)
    crossfade: float = Field(0.0, ge=0, le=5)
    captions: CaptionsIn | None = None


class CaptionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    mode: Literal["burn", "soft", "both"] = "burn"
    output: Output = Field(default_factory=Output)


class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hold_seconds: float = Field(0.0, ge=0, le=600)  # keeps the worker busy (tests, drills)

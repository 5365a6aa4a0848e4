"""Options of `compose` and `caption` jobs (owned by the compositor; validated by the gateway too).

Everything that can be known without opening the media is checked here, so the gateway answers 422
at submit time; what needs the media itself (trim beyond the clip, audio-only media as a video item,
a 1×1 image, a corrupt clip) fails the job with a stable error code in the worker.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .media import MediaRef
from .transcribe import TranscribeOptions

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]
ItemKind = Literal["intro", "video", "image", "transition", "outro"]
CaptionMode = Literal["burn", "soft", "both"]

# Output sizes we render; anything else (16K, 1×1, odd sizes) is refused at submit time.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "1280x720": (1280, 720),
    "1920x1080": (1920, 1080),
    "3840x2160": (3840, 2160),
}
RESOLUTION_ALIASES = {
    "720p": "1280x720",
    "1080p": "1920x1080",
    "fhd": "1920x1080",
    "4k": "3840x2160",
    "2160p": "3840x2160",
    "uhd": "3840x2160",
}
# Font names end up inside a generated ASS file (a comma-separated format): letters, digits, spaces only.
FONT_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$"


class Trim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(0.0, ge=0, le=24 * 3600)
    end: float | None = Field(None, gt=0, le=24 * 3600)

    @model_validator(mode="after")
    def _order(self) -> Trim:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"zero-length or reversed trim: end ({self.end}) must be after start ({self.start})")
        return self


class Logo(MediaRef):
    what: ClassVar[str] = "logo"

    position: Position = "top-right"
    scale: float = Field(0.12, gt=0, le=1)  # logo width as a fraction of the output width
    margin: int = Field(24, ge=0, le=1000)  # pixels from the edges
    opacity: float = Field(1.0, ge=0, le=1)


class TextAnimation(BaseModel):
    """A title typed out letter by letter (rendered from a generated ASS file, never a filter string)."""

    model_config = ConfigDict(extra="forbid")

    words: list[str] = Field(min_length=1, max_length=50)
    start: float = Field(0.5, ge=0, le=24 * 3600)
    letter_delay: float = Field(0.05, ge=0, le=2)
    font: str = Field("DejaVu Sans", pattern=FONT_NAME)
    size: int = Field(72, ge=8, le=400)  # at 1080p; scaled with the output height
    color: str = Field("&H0000FFFF", pattern=r"^&H[0-9A-Fa-f]{6,8}$")  # ASS &HAABBGGRR, default yellow
    outline_color: str = Field("&H00000000", pattern=r"^&H[0-9A-Fa-f]{6,8}$")
    bold: bool = True
    position: Literal["top", "center", "bottom"] = "center"

    @field_validator("words")
    @classmethod
    def _word_sizes(cls, words: list[str]) -> list[str]:
        if any(len(w) > 200 for w in words) or sum(len(w) for w in words) > 500:
            raise ValueError("text too long (at most 200 characters a word, 500 in all)")
        return words


class TimelineItem(MediaRef):
    kind: ItemKind
    trim: Trim = Field(default_factory=Trim)
    duration: float | None = Field(None, gt=0, le=3600)  # required for images; caps a clip's length otherwise
    logo: Logo | None = None
    text: TextAnimation | None = None

    def label(self) -> str:
        return f"{self.kind} item"

    @model_validator(mode="after")
    def _image_has_duration(self) -> TimelineItem:
        if self.kind == "image" and self.duration is None:
            raise ValueError("an image item needs a duration (seconds)")
        return self


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: str = "1920x1080"
    fps: int = Field(30, ge=1, le=60)
    encoder: Literal["auto", "nvenc", "x264"] = "auto"
    quality: Literal["draft", "standard", "high"] = "high"
    loudnorm: bool = False

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        value = RESOLUTION_ALIASES.get(value.strip().lower(), value.strip().lower())
        if value not in RESOLUTIONS:
            raise ValueError(f"unsupported output resolution {value!r}; use one of {', '.join(RESOLUTIONS)}")
        return value

    @property
    def size(self) -> tuple[int, int]:
        return RESOLUTIONS[self.resolution]


class CaptionStyle(BaseModel):
    """How burned-in SRT captions look (an ASS file from the transcriber keeps its own styles)."""

    model_config = ConfigDict(extra="forbid")

    font: str = Field("DejaVu Sans", pattern=FONT_NAME)
    size: int = Field(0, ge=0, le=200)  # 0 = about 5 % of the output height
    color: str = Field("&H00FFFFFF", pattern=r"^&H[0-9A-Fa-f]{6,8}$")
    outline_color: str = Field("&H00000000", pattern=r"^&H[0-9A-Fa-f]{6,8}$")
    margin: int = Field(0, ge=0, le=1000)  # 0 = about 6 % of the output height


class CaptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    mode: CaptionMode = "burn"
    format: Literal["auto", "ass", "srt"] = "auto"  # auto: the ASS artifact when there is one
    style: CaptionStyle = Field(default_factory=CaptionStyle)
    language: str = Field("und", pattern=r"^[a-z]{2,3}$")  # soft track language tag


class ComposeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: Output = Field(default_factory=Output)
    items: list[TimelineItem] = Field(min_length=1, max_length=500)
    crossfade: float = Field(0.0, ge=0, le=5)
    captions: CaptionsIn | None = None

    @model_validator(mode="after")
    def _crossfade_fits(self) -> ComposeOptions:
        # Images have a known length: a crossfade longer than one of them cannot work.
        if self.crossfade > 0 and len(self.items) > 1:
            for i, item in enumerate(self.items):
                if item.kind == "image" and item.duration is not None and item.duration <= self.crossfade:
                    raise ValueError(
                        f"items.{i}: duration {item.duration} s must exceed the crossfade ({self.crossfade} s)"
                    )
        return self


class CaptionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    mode: CaptionMode = "burn"
    output: Output = Field(default_factory=Output)
    style: CaptionStyle = Field(default_factory=CaptionStyle)


class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_timeline_media(options: ComposeOptions, streams: dict[str, list[dict[str, Any]]]) -> None:
    """Submit-time checks against what the gateway already knows about uploaded media (`streams` by
    media_id, from the media records): audio-only media as a picture, pictures too small to use.
    Raises InvalidInput (422) with the worker's codes; media not in `streams` is left to the worker."""
    from ..errors import InvalidInput

    def check(media_id: str | None, where: str) -> None:
        if media_id is None or media_id not in streams:
            return
        video = next((s for s in streams[media_id] if s.get("kind") == "video"), None)
        if video is None:
            raise InvalidInput(f"{where}: media {media_id} has no picture (audio only)", code="no_video_stream")
        if min(int(video.get("width") or 0), int(video.get("height") or 0)) < MIN_PICTURE:
            raise InvalidInput(
                f"{where}: media {media_id} is {video.get('width')}×{video.get('height')}; at least "
                f"{MIN_PICTURE}×{MIN_PICTURE} pixels needed",
                code="image_too_small",
            )

    for i, item in enumerate(options.items):
        check(item.media_id, f"items.{i}")
        if item.logo is not None:
            check(item.logo.media_id, f"items.{i}.logo")


MIN_PICTURE = 16

"""From validated options to a render plan: media resolved to local files, probed in parallel, and
checked against what is actually in them (trim within the clip, a video stream where one is needed,
images big enough). Errors here fail the job with a stable code before ffmpeg starts."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaflow.common.errors import InvalidInput, MediaError, NotFound
from mediaflow.common.fetch import fetch_url_async, url_suffix
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.options.compose import ComposeOptions, Logo, TimelineItem
from mediaflow.common.probe import probe_file
from mediaflow.common.settings import Settings
from mediaflow.common.storage import FileStorage, Storage

from .config import CompositorConfig

IMAGE_CODECS = {"png", "mjpeg", "jpeg", "bmp", "webp", "tiff", "gif", "jpegls", "jpeg2000", "pgm", "ppm"}
# A timeline item can be at most a frame longer than its clip (rounding), never more.
TRIM_TOLERANCE = 0.05


@dataclass
class Source:
    """One local media file and what probing found in it."""

    path: Path
    info: dict[str, Any]

    @property
    def video(self) -> dict[str, Any] | None:
        return next((s for s in self.info["streams"] if s["kind"] == "video"), None)

    @property
    def audio(self) -> dict[str, Any] | None:
        return next((s for s in self.info["streams"] if s["kind"] == "audio"), None)

    @property
    def is_image(self) -> bool:
        v = self.video
        if v is None:
            return False
        fmt = str(self.info.get("format", ""))
        return v.get("codec") in IMAGE_CODECS and (
            fmt.endswith("_pipe") or fmt == "image2" or not self.info.get("duration")
        )

    @property
    def duration(self) -> float:
        v = self.video
        if v and v.get("duration"):
            return float(v["duration"])
        return float(self.info.get("duration") or 0.0)


@dataclass
class PlannedItem:
    index: int
    item: TimelineItem
    source: Source
    start: float  # seconds into the source
    duration: float  # seconds on the timeline
    logo: Source | None = None


@dataclass
class Plan:
    options: ComposeOptions
    items: list[PlannedItem]
    captions: Path | None = None  # local ASS/SRT file for burn-in and/or the soft track
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.options.output.size[0]

    @property
    def height(self) -> int:
        return self.options.output.size[1]

    @property
    def fps(self) -> int:
        return self.options.output.fps

    @property
    def total_duration(self) -> float:
        fade = self.options.crossfade
        return sum(i.duration for i in self.items) - fade * (len(self.items) - 1)


def _ref(obj: TimelineItem | Logo) -> tuple[str, str]:
    if obj.media_id is not None:
        return "media_id", obj.media_id
    if obj.path is not None:
        return "path", obj.path
    return "url", obj.url or ""


class MediaResolver:
    """Turns media references into local files: uploaded media (by id, through storage), paths under
    an allow-listed root, or http(s) URLs (within the URL policy, checked again here). Object storage
    and URLs are downloaded into `workdir`, concurrently; a URL named twice is fetched once
    (`build_plan` resolves each distinct reference once)."""

    def __init__(self, store: JobStore, storage: Storage, settings: Settings, workdir: Path, tenant: str) -> None:
        self.store, self.storage, self.settings = store, storage, settings
        self.workdir, self.tenant = workdir, tenant

    async def resolve(self, kind: str, value: str) -> Path:
        if kind == "media_id":
            media = await self.store.get_media(value, self.tenant)  # NotFound: media_not_found
            return await self.fetch(media.key)
        if kind == "path":
            path = Path(value).resolve()
            roots = [Path(r).resolve() for r in self.settings.allowed_roots]
            if not any(path.is_relative_to(r) for r in roots):
                raise InvalidInput(f"path {value!r} is not under an allowed root", code="path_not_allowed")
            if not path.is_file():
                raise NotFound(f"media file {value!r} does not exist", code="media_not_found")
            return path
        if kind == "url":
            dest = self.workdir / f"url-{uuid.uuid4().hex[:12]}{url_suffix(value)}"  # a safe name for ffmpeg
            return (await fetch_url_async(value, dest, self.settings)).path
        raise InvalidInput(f"unknown media reference {kind!r}", code="invalid_input")

    async def fetch(self, key: str) -> Path:
        if isinstance(self.storage, FileStorage):
            path = self.storage.path(key)
            if not path.is_file():
                raise NotFound(f"media object {key} is missing from storage", code="media_not_found")
            return path
        # Remote storage: download next to the render (a safe name; the key's own name never reaches
        # ffmpeg's filter graph).
        suffix = "".join(c for c in Path(key).suffix[:8] if c.isalnum() or c == ".")
        dest = self.workdir / f"in-{uuid.uuid4().hex[:12]}{suffix}"

        def download() -> None:
            with self.storage.open(key) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)

        await asyncio.to_thread(download)
        return dest


async def build_plan(
    options: ComposeOptions, resolver: MediaResolver, config: CompositorConfig, captions: Path | None = None
) -> Plan:
    """Resolve and probe every distinct input concurrently, then check the timeline against them."""
    refs: list[tuple[str, str]] = []
    for item in options.items:
        refs.append(_ref(item))
        if item.logo is not None:
            refs.append(_ref(item.logo))
    unique = list(dict.fromkeys(refs))
    limit = asyncio.Semaphore(config.probe_concurrency)

    async def load(ref: tuple[str, str]) -> Source:
        async with limit:
            path = await resolver.resolve(*ref)
            try:
                info = await asyncio.to_thread(probe_file, path)
            except MediaError as exc:
                raise MediaError(f"{ref[1]!r}: {exc.message}", code="corrupt_media") from None
            return Source(path, info)

    loaded = await asyncio.gather(*(load(r) for r in unique))
    sources = dict(zip(unique, loaded, strict=True))
    planned: list[PlannedItem] = []
    for index, item in enumerate(options.items):
        source = sources[_ref(item)]
        planned.append(_plan_item(index, item, source, config))
        if item.logo is not None:
            logo = sources[_ref(item.logo)]
            _check_picture(logo, f"items.{index}.logo", config)
            planned[-1].logo = logo
    # Whole frames per item, so that the timeline's length is exactly the sum of its items.
    for p in planned:
        p.duration = max(1, int(p.duration * options.output.fps + 1e-6)) / options.output.fps
    plan = Plan(options, planned, captions, sources)
    if options.crossfade > 0 and len(planned) > 1:
        for p in planned:
            if p.duration <= options.crossfade:
                raise InvalidInput(
                    f"items.{p.index}: {p.duration:.3f} s is not longer than the crossfade ({options.crossfade} s)",
                    code="crossfade_too_long",
                )
    return plan


def _check_picture(source: Source, where: str, config: CompositorConfig) -> None:
    v = source.video
    if v is None:
        raise MediaError(f"{where}: the media has no picture (audio only)", code="no_video_stream")
    if min(int(v.get("width") or 0), int(v.get("height") or 0)) < config.min_image_size:
        raise MediaError(
            f"{where}: picture is {v.get('width')}×{v.get('height')}; at least "
            f"{config.min_image_size}×{config.min_image_size} pixels needed",
            code="image_too_small",
        )


def _plan_item(index: int, item: TimelineItem, source: Source, config: CompositorConfig) -> PlannedItem:
    where = f"items.{index}"
    _check_picture(source, where, config)
    if source.is_image:
        if item.duration is None:
            raise InvalidInput(f"{where}: an image needs a duration", code="image_needs_duration")
        return PlannedItem(index, item, source, 0.0, float(item.duration))
    length = source.duration
    if length <= 0:
        raise MediaError(f"{where}: the clip has no duration (empty or corrupt)", code="corrupt_media")
    start, end = item.trim.start, item.trim.end
    if start >= length:
        raise InvalidInput(
            f"{where}: trim.start {start} s is beyond the clip ({length:.3f} s)", code="trim_out_of_range"
        )
    if end is not None and end > length + TRIM_TOLERANCE:
        raise InvalidInput(f"{where}: trim.end {end} s is beyond the clip ({length:.3f} s)", code="trim_out_of_range")
    duration = min(end if end is not None else length, length) - start
    if item.duration is not None:
        duration = min(duration, item.duration)
    if duration < 0.04:
        raise InvalidInput(f"{where}: the trimmed clip is empty", code="empty_trim")
    return PlannedItem(index, item, source, start, duration)

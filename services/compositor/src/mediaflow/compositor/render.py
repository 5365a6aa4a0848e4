"""Render strategies, picked by measurement (docs/compositor.md, bench/compose.py):

- up to `chunk_items` items: ONE ffmpeg command with one filter graph. On 2 cores this is the
  fastest correct way (no intermediate encode, no extra pass); per-item renders + concat were ~1.1×
  slower in the baseline.
- longer timelines: chunks of `chunk_items` items, each one command (so one process never holds more
  than `chunk_items` open decoders: memory stays bounded however long the timeline), then joined —
  by the concat demuxer (video stream copy) when nothing spans the whole timeline, or by a final graph
  over the chunk files when crossfades, burned captions or loudness normalisation need one.

Chunk audio is lossless PCM in a .mov (audio timescale = sample rate, so sample-exact), and AAC is
encoded once, over the whole timeline, at the join. AAC chunks joined by stream copy were not
seamless: every chunk brought its 1024 encoder-priming samples along (the concat demuxer does not
apply each file's edit list), so each join added ~21 ms of silence and the audio drifted 21.3 ms
further behind the video per chunk (64 ms after 3 chunks; measured in docs/compositor.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaflow.common.options.compose import CaptionStyle, TimelineItem
from mediaflow.common.probe import probe_file

from .config import CompositorConfig
from .graph import _safe_path, build_graph
from .plan import Plan, PlannedItem, Source
from .runner import FfmpegLog, run_ffmpeg

ProgressFn = Callable[[float, str], Awaitable[None]]
# Share of job progress given to a concat join, per second of timeline, against 1 for rendering a chunk.
CONCAT_JOIN_WEIGHT = 0.1


@dataclass
class RenderRequest:
    plan: Plan
    out: Path
    workdir: Path
    output_kwargs: dict[str, Any]
    config: CompositorConfig
    ffmpeg: str = "ffmpeg"
    burn: Path | None = None
    soft: Path | None = None
    style: CaptionStyle | None = None
    language: str = "und"
    log: FfmpegLog = field(default_factory=FfmpegLog)
    on_progress: ProgressFn | None = None


def _cmd(ffmpeg: str, args: list[str]) -> list[str]:
    return [ffmpeg, *args]


async def render(req: RenderRequest) -> dict[str, Any]:
    plan = req.plan
    loudnorm = plan.options.output.loudnorm
    size = req.config.chunk_items
    if len(plan.items) <= size:
        await _render_output(req, plan, done=0.0, total=plan.total_duration, label="render")
        return {"strategy": "single-graph", "chunks": 1}

    groups = [plan.items[i : i + size] for i in range(0, len(plan.items), size)]
    subplans = [Plan(plan.options, g, None, plan.sources) for g in groups]
    needs_final_graph = plan.options.crossfade > 0 or req.burn is not None or loudnorm
    chunk_total = sum(p.total_duration for p in subplans)
    # The concat join copies the video and encodes only the audio (AAC runs 10-17x real time on one core).
    join_weight = 1.0 if needs_final_graph else CONCAT_JOIN_WEIGHT
    total = chunk_total + plan.total_duration * join_weight
    chunk_kwargs = chunk_output_args(req.output_kwargs, near_lossless_video=needs_final_graph)
    chunk_files = [req.workdir / f"chunk-{k}.mov" for k in range(len(groups))]
    offsets = [sum(p.total_duration for p in subplans[:k]) for k in range(len(groups))]
    limit = asyncio.Semaphore(req.config.parallel_chunks)

    async def one(k: int) -> None:
        async with limit:
            await _render_graph(
                req,
                subplans[k],
                chunk_files[k],
                burn=None,
                soft=None,
                loudnorm=False,
                done=offsets[k],
                total=total,
                label=f"chunk {k + 1}/{len(groups)}",
                output_kwargs=chunk_kwargs,
            )

    await asyncio.gather(*(one(k) for k in range(len(groups))))

    if not needs_final_graph:
        await _concat_join(req, chunk_files, done=chunk_total, total=total, weight=join_weight)
        return {"strategy": "chunked-concat-copy", "chunks": len(groups)}

    infos = await asyncio.gather(*(asyncio.to_thread(probe_file, f) for f in chunk_files))
    items = [
        PlannedItem(k, TimelineItem(kind="video", path=str(f)), Source(f, info), 0.0, sp.total_duration)
        for k, (f, info, sp) in enumerate(zip(chunk_files, infos, subplans, strict=True))
    ]
    final = Plan(plan.options, items, plan.captions, {})
    await _render_output(req, final, done=chunk_total, total=total, label="join")
    return {"strategy": "chunked-final-graph", "chunks": len(groups)}


def chunk_output_args(output_kwargs: dict[str, Any], *, near_lossless_video: bool) -> dict[str, Any]:
    """Output options of one chunk: the job's video encoder (fast and near-lossless when a final graph
    re-encodes it anyway), audio as 16-bit PCM (no priming, no padding: joins are sample-exact; AAC is
    encoded once at the join), and no `+faststart` (an extra rewrite of a file nobody streams)."""
    kwargs = {k: v for k, v in output_kwargs.items() if k not in ("b:a", "movflags")}
    kwargs["c:a"] = "pcm_s16le"
    if near_lossless_video and kwargs.get("c:v") == "libx264":
        kwargs.update({"preset": "ultrafast", "crf": 12})
    return kwargs


def concat_join_args(
    listing: Path, out: Path, output_kwargs: dict[str, Any], *, soft: Path | None = None, language: str = "und"
) -> list[str]:
    """The join of chunk files by the concat demuxer: video by stream copy, the whole timeline's audio
    encoded once with the job's audio options (AAC 320k 48 kHz stereo)."""
    args = ["-hide_banner", "-nostdin", "-y", "-f", "concat", "-safe", "0", "-i", _safe_path(listing)]
    maps = ["-map", "0:v", "-map", "0:a"]
    if soft is not None:
        args += ["-i", _safe_path(soft)]
        maps += ["-map", "1:s", "-c:s", "mov_text", "-metadata:s:s:0", f"language={language}"]
    audio = [
        arg
        for key in ("c:a", "b:a", "ar", "ac")
        if key in output_kwargs
        for arg in (f"-{key}", str(output_kwargs[key]))
    ]
    return [*args, *maps, "-c:v", "copy", *audio, "-movflags", "+faststart", str(out)]


async def _render_output(req: RenderRequest, plan: Plan, *, done: float, total: float, label: str) -> None:
    """The graph that writes the job's output: its captions and loudness normalisation go in here."""
    await _render_graph(
        req,
        plan,
        req.out,
        burn=req.burn,
        soft=req.soft,
        loudnorm=plan.options.output.loudnorm,
        done=done,
        total=total,
        label=label,
    )


async def _render_graph(
    req: RenderRequest,
    plan: Plan,
    out: Path,
    *,
    burn: Path | None,
    soft: Path | None,
    loudnorm: bool,
    done: float,
    total: float,
    label: str,
    output_kwargs: dict[str, Any] | None = None,
) -> None:
    kwargs = dict(output_kwargs or req.output_kwargs)
    if soft is not None:
        kwargs["_language"] = req.language
    graph = build_graph(
        plan,
        out,
        req.workdir,
        kwargs,
        burn=burn,
        soft=soft,
        loudnorm=loudnorm,
        style=req.style,
        threads=req.config.ffmpeg_threads,
    )

    async def progress(seconds: float, block: dict[str, str]) -> None:
        if req.on_progress is not None:
            fraction = (done + min(seconds, plan.total_duration)) / max(total, 1e-6)
            await req.on_progress(
                fraction,
                f"{label}: {seconds:.1f}/{plan.total_duration:.1f} s, "
                f"fps {block.get('fps', '?')}, speed {block.get('speed', '?')}",
            )

    await run_ffmpeg(_cmd(req.ffmpeg, graph.args()), req.log, req.workdir / f"{out.stem}.stderr", progress)


async def _concat_join(
    req: RenderRequest, chunk_files: list[Path], *, done: float, total: float, weight: float
) -> None:
    listing = req.workdir / "chunks.txt"
    listing.write_text("".join(f"file '{_safe_path(f)}'\n" for f in chunk_files))
    args = concat_join_args(listing, req.out, req.output_kwargs, soft=req.soft, language=req.language)
    length = req.plan.total_duration

    async def progress(seconds: float, block: dict[str, str]) -> None:
        if req.on_progress is not None:
            fraction = (done + min(seconds, length) * weight) / max(total, 1e-6)
            await req.on_progress(fraction, f"join: {seconds:.1f}/{length:.1f} s, speed {block.get('speed', '?')}")

    await run_ffmpeg(_cmd(req.ffmpeg, args), req.log, req.workdir / "concat.stderr", progress)

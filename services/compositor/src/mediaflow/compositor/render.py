"""Render strategies, picked by measurement (docs/compositor.md, bench/compose.py):

- up to `chunk_items` items: ONE ffmpeg command with one filter graph. On 2 cores this is the
  fastest correct way (no intermediate encode, no extra pass); per-item renders + concat were ~1.1×
  slower in the baseline.
- longer timelines: chunks of `chunk_items` items, each one command (so one process never holds more
  than `chunk_items` open decoders: memory stays bounded however long the timeline), then joined —
  by the concat demuxer with stream copy when nothing spans the whole timeline, or by a final graph
  over the chunk files when crossfades, burned captions or loudness normalisation need one.
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
        await _render_graph(req, plan, req.out, burn=req.burn, soft=req.soft, loudnorm=loudnorm,
                            done=0.0, total=plan.total_duration, label="render")
        return {"strategy": "single-graph", "chunks": 1}

    groups = [plan.items[i:i + size] for i in range(0, len(plan.items), size)]
    subplans = [Plan(plan.options, g, None, plan.sources) for g in groups]
    needs_final_graph = plan.options.crossfade > 0 or req.burn is not None or loudnorm
    chunk_total = sum(p.total_duration for p in subplans)
    total = chunk_total + (plan.total_duration if needs_final_graph else 0.0)
    # Chunks feeding a final graph are re-encoded there: encode them fast and near-lossless.
    chunk_kwargs = dict(req.output_kwargs)
    if needs_final_graph and chunk_kwargs.get("c:v") == "libx264":
        chunk_kwargs.update({"preset": "ultrafast", "crf": 12})
    chunk_files = [req.workdir / f"chunk-{k}.mp4" for k in range(len(groups))]
    offsets = [sum(p.total_duration for p in subplans[:k]) for k in range(len(groups))]
    limit = asyncio.Semaphore(req.config.parallel_chunks)

    async def one(k: int) -> None:
        async with limit:
            await _render_graph(req, subplans[k], chunk_files[k], burn=None, soft=None, loudnorm=False,
                                done=offsets[k], total=total, label=f"chunk {k + 1}/{len(groups)}",
                                output_kwargs=chunk_kwargs)

    await asyncio.gather(*(one(k) for k in range(len(groups))))

    if not needs_final_graph:
        await _concat_copy(req, chunk_files)
        return {"strategy": "chunked-concat-copy", "chunks": len(groups)}

    infos = await asyncio.gather(*(asyncio.to_thread(probe_file, f) for f in chunk_files))
    items = [PlannedItem(k, TimelineItem(kind="video", path=str(f)), Source(f, info), 0.0, sp.total_duration)
             for k, (f, info, sp) in enumerate(zip(chunk_files, infos, subplans, strict=True))]
    final = Plan(plan.options, items, plan.captions, {})
    await _render_graph(req, final, req.out, burn=req.burn, soft=req.soft, loudnorm=loudnorm,
                        done=chunk_total, total=total, label="join")
    return {"strategy": "chunked-final-graph", "chunks": len(groups)}


async def _render_graph(req: RenderRequest, plan: Plan, out: Path, *, burn: Path | None, soft: Path | None,
                        loudnorm: bool, done: float, total: float, label: str,
                        output_kwargs: dict[str, Any] | None = None) -> None:
    kwargs = dict(output_kwargs or req.output_kwargs)
    if soft is not None:
        kwargs["_language"] = req.language
    graph = build_graph(plan, out, req.workdir, kwargs, burn=burn, soft=soft, loudnorm=loudnorm,
                        style=req.style, threads=req.config.ffmpeg_threads)

    async def progress(seconds: float, block: dict[str, str]) -> None:
        if req.on_progress is not None:
            fraction = (done + min(seconds, plan.total_duration)) / max(total, 1e-6)
            await req.on_progress(fraction, f"{label}: {seconds:.1f}/{plan.total_duration:.1f} s, "
                                             f"fps {block.get('fps', '?')}, speed {block.get('speed', '?')}")

    await run_ffmpeg(_cmd(req.ffmpeg, graph.args()), req.log, req.workdir / f"{out.stem}.stderr", progress)


async def _concat_copy(req: RenderRequest, chunk_files: list[Path]) -> None:
    listing = req.workdir / "chunks.txt"
    listing.write_text("".join(f"file '{_safe_path(f)}'\n" for f in chunk_files))
    args = ["-hide_banner", "-nostdin", "-y", "-f", "concat", "-safe", "0", "-i", _safe_path(listing)]
    maps = ["-map", "0:v", "-map", "0:a"]
    if req.soft is not None:
        args += ["-i", _safe_path(req.soft)]
        maps += ["-map", "1:s", "-c:s", "mov_text", "-metadata:s:s:0", f"language={req.language}"]
    args += [*maps, "-c:v", "copy", "-c:a", "copy", "-movflags", "+faststart", str(req.out)]
    await run_ffmpeg(_cmd(req.ffmpeg, args), req.log, req.workdir / "concat.stderr", None)

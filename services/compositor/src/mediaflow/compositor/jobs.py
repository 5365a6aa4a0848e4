"""Job handlers of the compositor pool: probe and compose (the caption parent's handler is the caption
workflow's, mediaflow.common.workflows.caption.run_caption)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from mediaflow.common import metrics
from mediaflow.common.errors import InvalidInput, MediaflowError, NotFound
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import JobState, JobType
from mediaflow.common.options import parse_options
from mediaflow.common.options.compose import CaptionsIn, ComposeOptions
from mediaflow.common.probe import probe_file
from mediaflow.common.runtime.context import JobCancelled, JobContext
from mediaflow.common.settings import Settings, get_settings

from . import encoders
from .config import get_config
from .plan import MediaResolver, build_plan
from .render import RenderRequest, render
from .runner import FfmpegLog


@dataclass(frozen=True)
class Runtime:
    """What this worker process can do, found out once at start (GetCapabilities reports it)."""

    encoder: encoders.EncoderChoice
    ffmpeg_version: str
    libass: bool


@lru_cache(maxsize=4)
def runtime(ffmpeg: str = "ffmpeg") -> Runtime:
    try:
        version = subprocess.run(
            [ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split("\n", 1)[0]
        filters = subprocess.run(
            [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MediaflowError(f"ffmpeg is not usable: {exc}", code="ffmpeg_missing") from None
    libass = any(line.split()[1:2] == ["subtitles"] for line in filters.splitlines() if line.strip())
    choice = encoders.detect_encoder(ffmpeg, get_config().nvenc_test_timeout, get_settings().nvidia_driver_capabilities)
    return Runtime(choice, version, libass)


TEST_HOLD = re.compile(r"hold-(\d+(?:\.\d+)?)s\.\w+")


def held_for_test(ctx: JobContext) -> float:
    """How long a test asked this probe to hold its worker (Settings.test_hooks only; 0 otherwise)."""
    if not ctx.settings.test_hooks:
        return 0.0
    name = PurePosixPath(str(ctx.job.input.get("storage_key") or ctx.job.input.get("path") or "")).name
    match = TEST_HOLD.fullmatch(name)
    return min(float(match.group(1)), 600.0) if match else 0.0


async def probe(ctx: JobContext) -> dict[str, Any]:
    """Read media metadata with PyAV: the smallest real job, used to exercise the job system."""
    await ctx.progress(0.1, "probe", "reading media")
    with ctx.stage("probe"):
        async with ctx.media_path() as path:  # a URL is downloaded in a thread (stage `fetch`)
            info = await ctx.run_blocking(probe_file, path)
    steps = int(held_for_test(ctx) * 10)
    for i in range(steps):
        await ctx.progress((i + 1) / max(steps, 1), "hold", f"holding {i + 1}/{steps}")
        await asyncio.sleep(0.1)
    return info


async def _fetch_captions(ctx: JobContext, spec: CaptionsIn, workdir: Path) -> tuple[Path | None, Path | None]:
    """The transcribe job's caption artifacts, copied next to the render under names of our own.
    Returns (file to burn, file for the soft track) as the mode asks."""
    try:
        source = await ctx.store.get(spec.job_id, ctx.job.tenant)
    except NotFound:
        raise InvalidInput(f"captions.job_id {spec.job_id} does not exist", code="captions_not_found") from None
    if source.type != JobType.transcribe or source.state != JobState.succeeded:
        raise InvalidInput(
            f"captions.job_id {spec.job_id} is a {source.type.value} job that is "
            f"{source.state.value}; a succeeded transcribe job is needed",
            code="captions_not_ready",
        )
    names = {a.name for a in source.artifacts}

    def pick(order: list[str]) -> str | None:
        return next((n for n in order if n in names), None)

    burn_name = pick(
        {"auto": ["captions.ass", "captions.srt"], "ass": ["captions.ass"], "srt": ["captions.srt"]}[spec.format]
    )
    soft_name = pick(["captions.srt", "captions.ass"])
    if (spec.mode != "soft" and burn_name is None) or (spec.mode != "burn" and soft_name is None):
        raise InvalidInput(
            f"transcribe job {spec.job_id} has no caption file for mode {spec.mode!r}", code="captions_missing"
        )
    wanted = (burn_name if spec.mode != "soft" else None, soft_name if spec.mode != "burn" else None)

    def copy(name: str | None) -> Path | None:
        if name is None:
            return None
        dest = workdir / ("captions" + Path(name).suffix)
        with ctx.storage.open(keys.artifact(source.id, name)) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
        return dest

    burn, soft = await asyncio.gather(asyncio.to_thread(copy, wanted[0]), asyncio.to_thread(copy, wanted[1]))
    return burn, soft


async def compose(ctx: JobContext) -> dict[str, Any]:
    options: ComposeOptions = parse_options(JobType.compose, ctx.job.options)  # type: ignore[assignment]
    config = get_config()
    settings: Settings = ctx.settings
    rt = await asyncio.to_thread(runtime, settings.ffmpeg)
    requested = options.output.encoder
    if requested == "auto" and settings.encoder in ("x264", "nvenc"):
        requested = settings.encoder  # the deployment pins the encoder (MEDIAFLOW_ENCODER)
    choice = encoders.choose(requested, rt.encoder)
    started = time.monotonic()
    log = FfmpegLog()
    # Named after the job, so an operator (or a test) can tell whose files these are.
    with tempfile.TemporaryDirectory(prefix=f"mediaflow_compose_{ctx.job.id}_") as tmp:
        workdir = Path(tmp)
        try:
            with ctx.stage("prefetch"):
                await ctx.progress(0.0, "prefetch", "probing and fetching inputs", force=True)
                burn = soft = None
                if options.captions is not None:
                    burn, soft = await _fetch_captions(ctx, options.captions, workdir)
                resolver = MediaResolver(ctx.store, ctx.storage, settings, workdir, ctx.job.tenant)
                plan = await build_plan(options, resolver, config, burn or soft)
            await ctx.log(f"encoder {choice.name}: {choice.reason}")
            out = workdir / "output.mp4"
            W, H = plan.width, plan.height

            async def on_progress(fraction: float, message: str) -> None:
                await ctx.progress(0.02 + 0.96 * fraction, "render", message)
                ctx.check_cancelled()  # cancel seen by the progress write: stop ffmpeg now

            request = RenderRequest(
                plan,
                out,
                workdir,
                encoders.output_args(choice.name, H, options.output.quality, plan.fps),
                config,
                settings.ffmpeg,
                burn=burn,
                soft=soft,
                style=options.captions.style if options.captions else None,
                language=options.captions.language if options.captions else "und",
                log=log,
                on_progress=on_progress,
            )
            with ctx.stage("render"):
                await ctx.progress(
                    0.02, "render", f"{len(plan.items)} items, {plan.total_duration:.2f} s, {choice.name}", force=True
                )
                render_began = time.monotonic()
                strategy = await render(request)
                metrics.observe_render(
                    choice.name, plan.total_duration, plan.total_duration * plan.fps, time.monotonic() - render_began
                )
            info = await asyncio.to_thread(probe_file, out)
            with ctx.stage("upload"):
                await ctx.progress(0.99, "upload", "storing output.mp4", force=True)
                await ctx.write_artifact("output.mp4", out, "video/mp4")
                await ctx.write_artifact("ffmpeg.log", log.text().encode(), "text/plain; charset=utf-8")
        except (JobCancelled, asyncio.CancelledError):
            raise  # no artifact from a cancelled render; the temp dir goes with the with-block
        except MediaflowError:
            if log.entries:  # a failed render keeps its command and stderr for diagnosis
                with contextlib.suppress(Exception):
                    await ctx.write_artifact("ffmpeg.log", log.text().encode(), "text/plain; charset=utf-8")
            raise
    video = next((s for s in info["streams"] if s["kind"] == "video"), {})
    return {
        "encoder": choice.name,
        "encoder_reason": choice.reason,
        "duration": info["duration"],
        "expected_duration": round(plan.total_duration, 6),
        "width": video.get("width", W),
        "height": video.get("height", H),
        "fps": plan.fps,
        "items": len(plan.items),
        "captions": options.captions.mode if options.captions else None,
        "render_seconds": round(time.monotonic() - started, 3),
        **strategy,
    }

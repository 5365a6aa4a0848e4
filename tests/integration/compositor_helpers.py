"""Helpers shared by the compositor tests: generated pictures, ffprobe/PyAV checks, direct renders."""

from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path
from typing import Any

import av
import numpy as np

from mediaflow.common.options.compose import ComposeOptions
from mediaflow.common.settings import Settings
from mediaflow.compositor.config import CompositorConfig
from mediaflow.compositor.encoders import output_args
from mediaflow.compositor.plan import MediaResolver, build_plan
from mediaflow.compositor.render import RenderRequest, render

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"
BBB = MEDIA / "big_buck_bunny_small.mp4"  # 320x240 stored, 16:9 displayed, 5.1 audio, 25 fps, 5.3 s
GRID = MEDIA / "grid_bbaf2n.mp4"  # 360x288, stereo, 25 fps, 3 s
JFK = MEDIA / "jfk.flac"  # audio only


def make_image(path: Path, size: str, color: str = "red") -> Path:
    if size == "1x1":  # lavfi cannot make a 1×1 yuv frame; write a 1×1 RGB PNG by hand
        raw = b"\x00\xff\x00\x00"

        def chunk(kind: bytes, data: bytes) -> bytes:
            return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

        ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        )
        return path
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c={color}:s={size}", "-frames:v", "1", str(path)],
        check=True,
    )
    return path


def make_pattern(path: Path, size: str = "1024x768") -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}", "-frames:v", "1", str(path)],
        check=True,
    )
    return path


def make_clip(
    path: Path,
    size: str = "640x360",
    seconds: float = 1.0,
    fps: int = 25,
    audio: str | None = "stereo",
    color_src: str = "testsrc2",
) -> Path:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{color_src}=s={size}:r={fps}:d={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=f=440:r=44100:d={seconds}", "-af", f"aformat=channel_layouts={audio}"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def stream(info: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(s for s in info["streams"] if s["codec_type"] == kind)


def frame_at(path: Path, seconds: float) -> np.ndarray:
    """The RGB frame shown at `seconds` (PyAV)."""
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        container.seek(0)
        last = None
        for frame in container.decode(vs):
            if frame.time is not None and frame.time > seconds + 1e-3:
                break
            last = frame
        assert last is not None
        return last.to_ndarray(format="rgb24")


def video_frame_count(path: Path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


async def render_options(
    options: dict[str, Any],
    tmp: Path,
    roots: list[Path] | None = None,
    config: CompositorConfig | None = None,
    **kwargs: Any,
) -> tuple[Path, dict[str, Any], Any]:
    """Validate, plan and render a timeline straight through the compositor's code (no queue)."""
    opts = ComposeOptions.model_validate(options)
    settings = Settings(allowed_roots=[MEDIA, tmp, *(roots or [])])
    workdir = tmp / "work"
    workdir.mkdir(exist_ok=True)
    config = config or CompositorConfig()
    plan = await build_plan(opts, MediaResolver(None, None, settings, workdir, "t"), config)  # type: ignore[arg-type]
    out = tmp / "out.mp4"
    req = RenderRequest(
        plan, out, workdir, output_args("libx264", plan.height, opts.output.quality, plan.fps), config, **kwargs
    )
    info = await render(req)
    return out, info, plan

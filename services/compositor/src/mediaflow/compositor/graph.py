"""The ffmpeg filter graph of a timeline, built with ffmpeg-python.

Every input is normalised to the same shape before it is joined: fitted into the output frame by its
*display* aspect ratio (a 320×240 file flagged 16:9 is shown 16:9, not squashed), padded, `setsar=1`,
constant fps, yuv420p; audio resampled to 48 kHz stereo (`rematrix_maxval=1.0`, so a 5.1 downmix
through the float path is not 7.7 dB too loud), with silence for inputs that have none. Items are
then concatenated, or chained with xfade/acrossfade at offsets that account for earlier overlaps.

No user text and no user file name reaches the graph: titles and captions are generated files with
names of our own (checked by `_safe_path`), and every other value is a number or a fixed word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg

from mediaflow.common.errors import MediaflowError

from .plan import Plan, PlannedItem
from .textfx import caption_force_style, title_ass, write

SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
POSITIONS = {
    "top-left": ("{m}", "{m}"),
    "top-right": ("W-w-{m}", "{m}"),
    "bottom-left": ("{m}", "H-h-{m}"),
    "bottom-right": ("W-w-{m}", "H-h-{m}"),
    "center": ("(W-w)/2", "(H-h)/2"),
}


def _safe_path(path: Path) -> str:
    """A path we generated and that needs no escaping in a filter graph (defence in depth)."""
    text = str(path)
    if not SAFE_PATH.match(text):
        raise MediaflowError(f"internal: unsafe path for a filter graph: {text!r}", code="internal_error")
    return text


def fit_size(display_w: int, display_h: int, width: int, height: int) -> tuple[int, int]:
    """The largest even size with the source's display aspect that fits in width×height."""
    if display_w * height >= display_h * width:  # wider than the frame: full width
        w, h = width, round(width * display_h / display_w)
    else:
        w, h = round(height * display_w / display_h), height
    return max(2, w - w % 2), max(2, h - h % 2)


def fit_expressions(width: int, height: int) -> tuple[str, str]:
    """`fit_size` as scale-filter expressions, evaluated by ffmpeg on the frames it actually decodes:
    after auto-rotation (a phone clip stored 1920x1080 with a 90° display matrix arrives as 1080x1920)
    and with the sample aspect ratio applied (iw*sar = display width)."""
    dar = "iw*sar/ih"
    wider = f"gte({dar},{width}/{height})"
    return (f"if({wider},{width},2*trunc({height}*{dar}/2))", f"if({wider},2*trunc({width}/({dar})/2),{height})")


@dataclass
class Graph:
    """A built command: the ffmpeg-python output node plus the files it relies on."""

    stream: Any
    duration: float
    files: list[Path] = field(default_factory=list)

    def args(self) -> list[str]:
        return self.stream.get_args()


class _Inputs:
    """ffmpeg-python merges nodes with equal arguments, so the same clip used twice (same trim) would
    become one input feeding two chains, every frame buffered until the second use. A repeated use
    gets a distinct `thread_queue_size` (ffmpeg's default is 8 packets) and so stays its own input,
    decoded only while it plays; first uses keep ffmpeg's defaults."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, name: str, **kwargs: Any) -> Any:
        key = repr((name, sorted(kwargs.items())))
        uses = self.seen.get(key, 0)
        self.seen[key] = uses + 1
        if uses:
            kwargs["thread_queue_size"] = 8 + uses
        return ffmpeg.input(name, **kwargs)


def _video(plan: Plan, p: PlannedItem, workdir: Path, new_input: _Inputs) -> tuple[Any, Any]:
    """Normalised video and audio streams of one item."""
    W, H, fps = plan.width, plan.height, plan.fps
    src = p.source
    if src.is_image:
        inp = new_input(str(src.path), loop=1, framerate=fps, t=f"{p.duration:.6f}")
    else:
        inp = new_input(str(src.path), ss=f"{p.start:.6f}", t=f"{p.duration:.6f}")
    w, h = fit_expressions(W, H)
    v = (
        inp.video.filter("fps", fps=fps)
        .filter("scale", w, h, flags="bicubic")
        .filter("setsar", 1)
        .filter("pad", W, H, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("format", "yuv420p")
        .filter("trim", duration=f"{p.duration:.6f}")
        .filter("setpts", "PTS-STARTPTS")
    )
    if p.logo is not None and p.item.logo is not None:
        # Trimmed again: a logo cut from a video longer than the item would otherwise extend it.
        v = _overlay_logo(v, new_input(str(p.logo.path)), p.item.logo, W).filter("trim", duration=f"{p.duration:.6f}")
    if p.item.text is not None:
        ass = write(workdir / f"title-{p.index}.ass", title_ass(p.item.text, W, H, p.duration))
        v = v.filter("ass", _safe_path(ass))
    if src.audio is not None and not src.is_image:
        a = inp.audio
    else:
        a = new_input("anullsrc=r=48000:cl=stereo", f="lavfi", t=f"{p.duration:.6f}").audio
    a = (
        a.filter("aresample", osr=48000, ochl="stereo", rematrix_maxval=1.0)
        .filter("aformat", sample_fmts="fltp", sample_rates=48000, channel_layouts="stereo")
        .filter("apad")
        .filter("atrim", duration=f"{p.duration:.6f}")
        .filter("asetpts", "PTS-STARTPTS")
    )
    return v, a


def _overlay_logo(v: Any, logo_input: Any, spec: Any, out_width: int) -> Any:
    lw = max(2, round(out_width * spec.scale))
    lw -= lw % 2
    img = logo_input.video.filter("scale", lw, -2).filter("format", "rgba")
    if spec.opacity < 1:
        img = img.filter("colorchannelmixer", aa=f"{spec.opacity:.3f}")
    x, y = (e.format(m=int(spec.margin)) for e in POSITIONS[spec.position])
    # A still logo is one frame; overlay repeats the last frame of its overlay input (eof_action).
    # format=yuv420 blends straight into the output's format: `auto` picked a wider one and cost ~30 %
    # more CPU and ~160 MB more memory on the reference timeline (bench/compose.py).
    return ffmpeg.overlay(v, img, x=x, y=y, eof_action="repeat", format="yuv420")


def _join(plan: Plan, streams: list[tuple[Any, Any]], durations: list[float]) -> tuple[Any, Any]:
    fade = plan.options.crossfade
    if len(streams) == 1:
        return streams[0]
    if fade <= 0:
        joined = ffmpeg.concat(*[s for pair in streams for s in pair], v=1, a=1).node
        return joined[0], joined[1]
    v, a = streams[0]
    length = durations[0]
    for (nv, na), d in zip(streams[1:], durations[1:], strict=True):
        # The next item starts `fade` seconds before the current end of the timeline.
        v = ffmpeg.filter([v, nv], "xfade", transition="fade", duration=f"{fade:.6f}", offset=f"{length - fade:.6f}")
        a = ffmpeg.filter([a, na], "acrossfade", d=f"{fade:.6f}", c1="tri", c2="tri")
        length += d - fade
    return v, a


def build_graph(
    plan: Plan,
    out: Path,
    workdir: Path,
    output_kwargs: dict[str, Any],
    *,
    burn: Path | None = None,
    soft: Path | None = None,
    loudnorm: bool = False,
    style: Any = None,
    threads: int = 0,
) -> Graph:
    """The whole render as one ffmpeg command."""
    new_input = _Inputs()
    pairs = [_video(plan, p, workdir, new_input) for p in plan.items]
    v, a = _join(plan, pairs, [p.duration for p in plan.items])
    if burn is not None:
        if burn.suffix == ".ass":
            v = v.filter("ass", _safe_path(burn))
        else:
            extra = {"force_style": caption_force_style(style)} if style is not None else {}
            v = v.filter("subtitles", _safe_path(burn), **extra)
    if loudnorm:
        a = a.filter("loudnorm", I=-16, TP=-1.5, LRA=11).filter("aresample", 48000)
    streams = [v, a]
    kwargs = dict(output_kwargs)
    if soft is not None:
        streams.append(ffmpeg.input(_safe_path(soft))["s"])
        kwargs.update({"c:s": "mov_text", "metadata:s:s:0": "language=" + kwargs.pop("_language", "und")})
    kwargs.pop("_language", None)
    if threads:
        kwargs["threads"] = threads
    stream = ffmpeg.output(*streams, str(out), **kwargs).global_args("-hide_banner", "-nostdin", "-y")
    return Graph(stream, plan.total_duration)

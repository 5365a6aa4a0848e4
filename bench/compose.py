"""Compositing speed: the compositor vs one hand-written ffmpeg command vs moviepy, same timeline.

Reference timeline (1920x1080, 30 fps, libx264 veryfast CRF 20 capped at 20 Mb/s, AAC 320 kb/s):
11 clips of mixed sizes and aspects (320x240 flagged 16:9 with 5.1 audio, 360x288, 640x480 without
audio, mono, portrait, 2560x1440, ...) + one still image + a logo on every item + burned SRT captions.
Each variant runs in its own subprocess (so peak RSS is its own), interleaved, `--runs` times;
moviepy runs once (it takes minutes).

    .venv/bin/python -m bench.compose                 # 3 runs each, moviepy once
    .venv/bin/python -m bench.compose --runs 1 --no-moviepy
moviepy is only in the bench environment: `uv sync --all-packages --group dev --group bench`.
Targets (issue 4): <= 1.05x the hand-written command, >= 5x faster than moviepy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "fixtures" / "media"
W, H, FPS = 1920, 1080, 30
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
X264 = [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-crf",
    "20",
    "-maxrate",
    "20M",
    "-bufsize",
    "40M",
    "-profile:v",
    "high",
    "-g",
    "60",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-b:a",
    "320k",
    "-ar",
    "48000",
    "-ac",
    "2",
    "-movflags",
    "+faststart",
]
SRT = """1
00:00:01,000 --> 00:00:04,000
From fairest creatures we desire increase,

2
00:00:05,000 --> 00:00:09,000
That thereby beauty's rose might never die,

3
00:00:10,000 --> 00:00:15,000
But as the riper should by time decease,

4
00:00:16,000 --> 00:00:21,000
His tender heir might bear his memory:

5
00:00:22,000 --> 00:00:28,000
But thou contracted to thine own bright eyes,
"""


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_inputs(d: Path) -> dict[str, Any]:
    """Generated clips (lavfi, encoded like camera/phone files) + the real fixture clips."""

    def clip(name: str, size: str, seconds: float, fps: int, audio: str | None, src: str = "testsrc2") -> Path:
        out = d / name
        args = ["-f", "lavfi", "-i", f"{src}=s={size}:r={fps}:d={seconds}"]
        if audio:
            args += [
                "-f",
                "lavfi",
                "-i",
                f"sine=f=330:r=44100:d={seconds}",
                "-af",
                f"aformat=channel_layouts={audio}",
                "-c:a",
                "aac",
            ]
        _ff(*args, "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-shortest", str(out))
        return out

    logo = d / "logo.png"
    _ff("-f", "lavfi", "-i", "color=c=red@0.9:s=300x120,format=rgba", "-frames:v", "1", str(logo))
    still = d / "still.png"
    _ff("-f", "lavfi", "-i", "testsrc2=s=1600x1200", "-frames:v", "1", str(still))
    srt = d / "captions.srt"
    srt.write_text(SRT)
    # (path, trim start, trim end)
    clips = [
        (MEDIA / "big_buck_bunny_small.mp4", 0.0, 5.0),
        (MEDIA / "grid_bbaf2n.mp4", 0.0, 3.0),
        (clip("fhd.mp4", "1920x1080", 2.5, 30, "stereo"), 0.0, 2.5),
        (clip("hd_mono.mp4", "1280x720", 2.5, 25, "mono", "testsrc"), 0.0, 2.5),
        (clip("sd_silent.mp4", "640x480", 2.5, 30, None, "smptebars"), 0.0, 2.5),
        (clip("fwvga.mp4", "854x480", 2.5, 24, "stereo"), 0.0, 2.5),
        (clip("portrait.mp4", "720x1280", 2.5, 30, "stereo"), 0.0, 2.5),
        (clip("qhd.mp4", "2560x1440", 2.0, 30, "stereo"), 0.0, 2.0),
        (MEDIA / "grid_bbaf2n.mp4", 0.5, 2.5),
        (MEDIA / "big_buck_bunny_small.mp4", 2.0, 5.0),
        (clip("scope.mp4", "1920x800", 2.5, 24, "stereo"), 0.0, 2.5),
    ]
    return {
        "clips": [(str(p), s, e) for p, s, e in clips],
        "still": str(still),
        "still_seconds": 3.0,
        "logo": str(logo),
        "srt": str(srt),
    }


def timeline(inputs: dict[str, Any]) -> dict[str, Any]:
    logo = {"path": inputs["logo"], "position": "top-right", "scale": 0.12, "margin": 24}
    items = [{"kind": "video", "path": p, "trim": {"start": s, "end": e}, "logo": logo} for p, s, e in inputs["clips"]]
    items.insert(5, {"kind": "image", "path": inputs["still"], "duration": inputs["still_seconds"], "logo": logo})
    return {"output": {"resolution": f"{W}x{H}", "fps": FPS, "quality": "high", "encoder": "x264"}, "items": items}


# ---- the three variants -------------------------------------------------------------------------
def run_mediaflow(inputs: dict[str, Any], out: Path) -> None:
    from mediaflow.common.options.compose import CaptionStyle, ComposeOptions
    from mediaflow.common.settings import Settings
    from mediaflow.compositor.config import CompositorConfig
    from mediaflow.compositor.encoders import output_args
    from mediaflow.compositor.plan import MediaResolver, build_plan
    from mediaflow.compositor.render import RenderRequest, render

    async def go() -> None:
        opts = ComposeOptions.model_validate(timeline(inputs))
        with tempfile.TemporaryDirectory(prefix="mediaflow_bench_") as tmp:
            work = Path(tmp)
            settings = Settings(allowed_roots=[Path("/")])
            plan = await build_plan(
                opts,
                MediaResolver(None, None, settings, work, "bench"),  # type: ignore[arg-type]
                CompositorConfig(),
            )
            srt = work / "captions.srt"
            srt.write_text(Path(inputs["srt"]).read_text())
            req = RenderRequest(
                plan,
                out,
                work,
                output_args("libx264", H, "high", FPS),
                CompositorConfig(),
                burn=srt,
                style=CaptionStyle(),
            )
            await render(req)

    asyncio.run(go())


def hand_written_command(inputs: dict[str, Any], out: Path) -> list[str]:
    """What a careful person writes by hand: one filter graph, DAR honoured, one logo overlay and
    the subtitles on the joined stream."""
    args: list[str] = ["ffmpeg", "-hide_banner", "-nostdin", "-y"]
    chains: list[str] = []
    pairs: list[str] = []
    n = 0
    entries: list[tuple[str, float, float, bool]] = [(p, s, e, False) for p, s, e in inputs["clips"]]
    entries.insert(5, (inputs["still"], 0.0, inputs["still_seconds"], True))
    for path, start, end, is_image in entries:
        dur = end - start
        if is_image:
            args += ["-loop", "1", "-framerate", str(FPS), "-t", f"{dur}", "-i", path]
        else:
            args += ["-ss", f"{start}", "-t", f"{dur}", "-i", path]
        v = n
        n += 1
        has_audio = (
            not is_image
            and subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-select_streams",
                    "a",
                    "-show_entries",
                    "stream=index",
                    "-of",
                    "csv=p=0",
                    path,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            != ""
        )
        if has_audio:
            a = f"{v}:a"
        else:
            args += ["-f", "lavfi", "-t", f"{dur}", "-i", "anullsrc=r=48000:cl=stereo"]
            a = f"{n}:a"
            n += 1
        k = len(pairs)
        chains.append(
            f"[{v}:v]fps={FPS},scale=iw*sar:ih,scale={W}:{H}:force_original_aspect_ratio=decrease,"
            f"setsar=1,pad={W}:{H}:(ow-iw)/2:(oh-ih)/2,format=yuv420p[v{k}]"
        )
        chains.append(
            f"[{a}]aresample=48000:ochl=stereo:rematrix_maxval=1.0,"
            f"aformat=sample_fmts=fltp:channel_layouts=stereo[a{k}]"
        )
        pairs.append(f"[v{k}][a{k}]")
    args += ["-i", inputs["logo"]]
    logo = n
    lw = round(W * 0.12)
    chains.append(f"{''.join(pairs)}concat=n={len(pairs)}:v=1:a=1[cv][ca]")
    chains.append(f"[{logo}:v]scale={lw}:-2,format=rgba[lg]")
    chains.append("[cv][lg]overlay=W-w-24:24[ov]")
    chains.append(f"[ov]subtitles={inputs['srt']}:force_style='FontName=DejaVu Sans,FontSize=16'[vo]")
    args += ["-filter_complex", ";".join(chains), "-map", "[vo]", "-map", "[ca]", *X264, str(out)]
    return args


def run_hand(inputs: dict[str, Any], out: Path) -> None:
    subprocess.run(hand_written_command(inputs, out), check=True, capture_output=True)


def run_moviepy(inputs: dict[str, Any], out: Path) -> None:
    from moviepy import CompositeVideoClip, ImageClip, TextClip, VideoFileClip, concatenate_videoclips  # type: ignore[import-not-found]

    from mediaflow.compositor.graph import fit_size

    lw = round(W * 0.12)
    items = []
    entries: list[tuple[str, float, float, bool]] = [(p, s, e, False) for p, s, e in inputs["clips"]]
    entries.insert(5, (inputs["still"], 0.0, inputs["still_seconds"], True))
    for path, start, end, is_image in entries:
        clip = ImageClip(path).with_duration(end - start) if is_image else VideoFileClip(path).subclipped(start, end)
        w, h = fit_size(clip.w, clip.h, W, H)
        clip = clip.resized(new_size=(w, h)).with_position("center")
        logo = ImageClip(inputs["logo"]).resized(width=lw).with_position((W - lw - 24, 24)).with_duration(clip.duration)
        items.append(CompositeVideoClip([clip, logo], size=(W, H), bg_color=(0, 0, 0)).with_duration(clip.duration))
    joined = concatenate_videoclips(items)
    subs = []
    for block in Path(inputs["srt"]).read_text().strip().split("\n\n"):
        _, times, text = block.split("\n", 2)
        a, b = (
            sum(float(x) * m for x, m in zip(t.replace(",", ".").split(":"), (3600, 60, 1), strict=True))
            for t in times.split(" --> ")
        )
        subs.append(
            TextClip(font=FONT, text=text, font_size=56, color="white", stroke_color="black", stroke_width=3)
            .with_start(a)
            .with_duration(b - a)
            .with_position(("center", H - 140))
        )
    final = CompositeVideoClip([joined, *subs], size=(W, H))
    final.write_videofile(
        str(out),
        fps=FPS,
        codec="libx264",
        preset="veryfast",
        audio_codec="aac",
        audio_bitrate="320k",
        audio_fps=48000,
        threads=2,
        logger=None,
        ffmpeg_params=["-crf", "20", "-maxrate", "20M", "-bufsize", "40M", "-pix_fmt", "yuv420p"],
    )


VARIANTS = {"mediaflow": run_mediaflow, "hand": run_hand, "moviepy": run_moviepy}


def _child(variant: str, inputs_json: str, out: str) -> None:
    inputs = json.loads(Path(inputs_json).read_text())
    t0 = time.perf_counter()
    VARIANTS[variant](inputs, Path(out))
    seconds = time.perf_counter() - t0
    # CPU seconds are what the shared 2-core machine cannot blur: wall time waits for other tenants.
    usage = [resource.getrusage(resource.RUSAGE_CHILDREN)]
    if variant == "moviepy":
        usage.append(resource.getrusage(resource.RUSAGE_SELF))
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    # ffmpeg's own peak (the child) for the ffmpeg variants; the Python process for moviepy.
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if variant == "moviepy" else 0,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(
        json.dumps({"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mib": round(peak / 1024, 1)})
    )


def _measure(variant: str, inputs_json: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compose", "--child", variant, str(inputs_json), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe(path: Path) -> dict[str, Any]:
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    return {
        "width": v["width"],
        "height": v["height"],
        "fps": v["r_frame_rate"],
        "duration": round(float(info["format"]["duration"]), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-moviepy", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    from bench._common import write_result

    with tempfile.TemporaryDirectory(prefix="mediaflow_bench_") as tmp:
        d = Path(tmp)
        inputs = make_inputs(d)
        inputs_json = d / "inputs.json"
        inputs_json.write_text(json.dumps(inputs))
        runs: dict[str, list[dict[str, float]]] = {"mediaflow": [], "hand": []}
        outputs: dict[str, dict[str, Any]] = {}
        for i in range(args.runs):
            for variant in ("mediaflow", "hand") if i % 2 == 0 else ("hand", "mediaflow"):
                out = d / f"{variant}.mp4"
                runs[variant].append(_measure(variant, inputs_json, out))
                outputs[variant] = _probe(out)
                print(variant, runs[variant][-1], flush=True)
        if not args.no_moviepy:
            out = d / "moviepy.mp4"
            runs["moviepy"] = [_measure("moviepy", inputs_json, out)]
            outputs["moviepy"] = _probe(out)
            print("moviepy", runs["moviepy"][-1], flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_seconds"] for r in v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "timeline": {
            "clips": len(inputs["clips"]),
            "images": 1,
            "logo": True,
            "burned_captions": True,
            "output": f"{W}x{H}@{FPS}",
            "encoder": "libx264 veryfast crf 20 maxrate 20M",
        },
        "runs": runs,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "peak_rss_mib": {k: max(r["peak_rss_mib"] for r in v) for k, v in runs.items()},
        "outputs": outputs,
        "median_cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "ratio_vs_hand_written": round(med["mediaflow"] / med["hand"], 3),
        "cpu_ratio_vs_hand_written": round(cpu["mediaflow"] / cpu["hand"], 3),
        "targets": {"vs_hand_written_max": 1.05, "moviepy_speedup_min": 5.0},
    }
    if "moviepy" in med:
        result["speedup_vs_moviepy"] = round(med["moviepy"] / med["mediaflow"], 2)
        result["cpu_speedup_vs_moviepy"] = round(cpu["moviepy"] / cpu["mediaflow"], 2)
    path = write_result("compose", result)
    print(json.dumps({k: result[k] for k in result if k not in ("runs",)}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()

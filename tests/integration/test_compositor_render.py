"""Real renders with real ffmpeg and real media, checked with ffprobe and PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest
from compositor_helpers import (
    BBB,
    GRID,
    JFK,
    ffprobe,
    frame_at,
    make_clip,
    make_image,
    make_pattern,
    render_options,
    stream,
    video_frame_count,
)

from mediaflow.common.errors import MediaflowError
from mediaflow.compositor.config import CompositorConfig


def draft(resolution: str = "1280x720", fps: int = 25) -> dict:
    return {"resolution": resolution, "fps": fps, "quality": "draft", "encoder": "x264"}


async def test_mixed_timeline_with_logo_title_and_image(tmp_path):
    logo = make_image(tmp_path / "logo.png", "400x200", "red")
    still = make_pattern(tmp_path / "still.png", "1024x768")
    out, info, plan = await render_options(
        {
            "output": draft(),
            "items": [
                {
                    "kind": "intro",
                    "path": str(GRID),
                    "trim": {"start": 0.0, "end": 2.0},
                    "logo": {"path": str(logo), "position": "top-right", "scale": 0.1, "margin": 20, "opacity": 1.0},
                    "text": {"words": ["Hello", "world"], "start": 0.0, "letter_delay": 0.02},
                },
                {"kind": "image", "path": str(still), "duration": 1.0},
                {"kind": "video", "path": str(BBB), "trim": {"start": 1.0, "end": 2.6}},
            ],
        },
        tmp_path,
    )
    assert info["strategy"] == "single-graph"
    meta = ffprobe(out)
    v, a = stream(meta, "video"), stream(meta, "audio")
    assert (v["codec_name"], v["width"], v["height"], v["r_frame_rate"], v["pix_fmt"]) == (
        "h264",
        1280,
        720,
        "25/1",
        "yuv420p",
    )
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("aac", "48000", 2)
    expected = 2.0 + 1.0 + 1.6
    assert plan.total_duration == pytest.approx(expected)
    assert abs(float(v["duration"]) - expected) <= 1 / 25 + 1e-6
    assert video_frame_count(out) == round(expected * 25)
    # The logo: 128 px wide (0.1 × 1280), 20 px from the top-right corner, solid red.
    frame = frame_at(out, 1.0)
    patch = frame[30:70, 1280 - 20 - 100 : 1280 - 30].astype(int)
    assert patch[..., 0].mean() > 200 and patch[..., 1].mean() < 60 and patch[..., 2].mean() < 60
    # Outside the logo the picture is the GRID speaker's blue background, not red.
    assert frame[30:70, 600:700, 0].mean() < 150
    # The title: yellow letters in the middle band at 1.5 s (all typed by then).
    middle = frame_at(out, 1.5)[300:420, 400:880].astype(int)
    yellow = (middle[..., 0] > 200) & (middle[..., 1] > 200) & (middle[..., 2] < 80)
    assert yellow.sum() > 300
    # The logo and title belong to the first item only.
    later = frame_at(out, 3.8)
    corner = later[30:70, 1150:1250].astype(int)
    assert not ((corner[..., 0] > 200) & (corner[..., 1] < 60)).mean() > 0.5


async def test_display_aspect_is_honoured_and_padded(tmp_path):
    # big_buck_bunny_small.mp4 is stored 320x240 but flagged 16:9: it must fill a 16:9 frame, not be
    # pillarboxed as 4:3.
    out, _, _ = await render_options(
        {"output": draft(), "items": [{"kind": "video", "path": str(BBB), "trim": {"start": 2.0, "end": 2.4}}]},
        tmp_path,
    )
    frame = frame_at(out, 0.2).astype(int)
    assert frame[:, :40].mean() > 20 and frame[:, -40:].mean() > 20  # no side bars
    # A 4:3 clip (GRID is 360x288, 5:4) is pillarboxed: black bars left and right.
    (tmp_path / "g").mkdir()
    out2, _, _ = await render_options(
        {"output": draft(), "items": [{"kind": "video", "path": str(GRID), "trim": {"start": 0.0, "end": 0.4}}]},
        tmp_path / "g",
    )
    frame2 = frame_at(out2, 0.2).astype(int)
    assert frame2[:, :150].max() < 40 and frame2[:, -150:].max() < 40
    assert frame2[:, 500:780].mean() > 40


async def test_rotated_phone_clip_is_shown_upright(tmp_path):
    land = make_clip(tmp_path / "land.mp4", "640x360", 0.4)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(land), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated)],
        check=True,
    )
    out, _, _ = await render_options({"output": draft(), "items": [{"kind": "video", "path": str(rotated)}]}, tmp_path)
    frame = frame_at(out, 0.2).astype(int)
    # Displayed 360x640 (portrait) → 404x720 in the middle of a 1280x720 frame, black bars at the sides.
    assert frame[:, :400].max() < 40 and frame[:, -400:].max() < 40
    assert frame[:, 460:820].mean() > 40


async def test_crossfade_duration_and_silent_track(tmp_path):
    silent = make_clip(tmp_path / "silent.mp4", "640x480", 1.2, audio=None)
    mono = make_clip(tmp_path / "mono.mp4", "1920x1080", 1.2, audio="mono")
    out, _, plan = await render_options(
        {
            "output": draft(),
            "crossfade": 0.4,
            "items": [
                {"kind": "video", "path": str(silent)},
                {"kind": "video", "path": str(mono)},
                {"kind": "video", "path": str(GRID), "trim": {"end": 1.2}},
            ],
        },
        tmp_path,
    )
    meta = ffprobe(out)
    expected = 3 * 1.2 - 2 * 0.4
    assert plan.total_duration == pytest.approx(expected)
    assert abs(float(stream(meta, "video")["duration"]) - expected) <= 1 / 25 + 1e-6
    assert abs(float(meta["format"]["duration"]) - expected) <= 2 / 25
    a = stream(meta, "audio")
    assert (a["sample_rate"], a["channels"]) == ("48000", 2)


async def test_1080p_output(tmp_path):
    out, _, _ = await render_options(
        {
            "output": draft("1920x1080", 30),
            "items": [{"kind": "video", "path": str(BBB), "trim": {"start": 0.0, "end": 1.0}}],
        },
        tmp_path,
    )
    v = stream(ffprobe(out), "video")
    assert (v["width"], v["height"], v["r_frame_rate"]) == (1920, 1080, "30/1")
    assert video_frame_count(out) == 30


def _mean_volume(path: Path) -> float:
    err = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return float(err.split("mean_volume:")[1].split("dB")[0])


async def test_51_downmix_is_not_louder_than_the_source(tmp_path):
    """5.1 → stereo through the float path without rematrix_maxval came out ~7.7 dB louder."""
    out, _, _ = await render_options({"output": draft(), "items": [{"kind": "video", "path": str(BBB)}]}, tmp_path)
    ours = _mean_volume(out)
    # ffmpeg's own normalised s16 downmix of the same file is the reference level.
    ref = tmp_path / "ref.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(BBB), "-ac", "2", "-c:a", "pcm_s16le", str(ref)], check=True
    )
    assert abs(ours - _mean_volume(ref)) < 2.0


async def _ffmpeg_peak_rss(stop: asyncio.Event, peaks: list[int]) -> None:
    """Samples the RSS of this process's ffmpeg children every 50 ms."""
    me = psutil.Process(os.getpid())
    while not stop.is_set():
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "ffmpeg" in child.name():
                    peaks.append(child.memory_info().rss)
        await asyncio.sleep(0.05)


async def _render_measured(options: dict, tmp: Path, config: CompositorConfig) -> tuple[Path, dict, int]:
    tmp.mkdir()
    stop, peaks = asyncio.Event(), [0]
    sampler = asyncio.create_task(_ffmpeg_peak_rss(stop, peaks))
    try:
        out, info, _ = await render_options(options, tmp, roots=[tmp.parent], config=config)
    finally:
        stop.set()
        await sampler
    return out, info, max(peaks)


async def test_long_timeline_renders_in_chunks_with_bounded_memory(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", "640x360", 0.4)
    items = [{"kind": "video", "path": str(clip if i % 3 else GRID), "trim": {"end": 0.4}} for i in range(40)]
    options = {"output": draft("1280x720"), "items": items}
    out, info, chunked_peak = await _render_measured(options, tmp_path / "chunked", CompositorConfig(chunk_items=10))
    assert info == {"strategy": "chunked-concat-copy", "chunks": 4}
    assert abs(float(stream(ffprobe(out), "video")["duration"]) - 16.0) <= 1 / 25 + 1e-6
    assert video_frame_count(out) == 400
    # The same 40 items in one graph hold 40 open decoders at once (~540 MiB here); chunks of 10 do not.
    _, info1, single_peak = await _render_measured(options, tmp_path / "single", CompositorConfig(chunk_items=100))
    assert info1["strategy"] == "single-graph"
    assert chunked_peak < 350 * 2**20 and chunked_peak < 0.6 * single_peak, (chunked_peak, single_peak)


async def test_chunked_with_crossfade_joins_through_a_final_graph(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", "640x360", 0.6)
    items = [{"kind": "video", "path": str(clip)} for _ in range(5)]
    out, info, _plan = await render_options(
        {"output": draft("1280x720"), "crossfade": 0.2, "items": items},
        tmp_path,
        config=CompositorConfig(chunk_items=2),
    )
    assert info == {"strategy": "chunked-final-graph", "chunks": 3}
    expected = 5 * 0.6 - 4 * 0.2
    assert abs(float(stream(ffprobe(out), "video")["duration"]) - expected) <= 1 / 25 + 1e-6


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("audio_only", "no_video_stream"),
        ("corrupt", "corrupt_media"),
        ("tiny_image", "image_too_small"),
        ("trim_beyond", "trim_out_of_range"),
        ("missing", "media_not_found"),
        ("outside_roots", "path_not_allowed"),
        ("fade_too_long", "crossfade_too_long"),
    ],
)
async def test_bad_media_gives_clear_errors(tmp_path, case, code):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    tiny = make_image(tmp_path / "tiny.png", "1x1")
    item = {
        "audio_only": {"kind": "video", "path": str(JFK)},
        "corrupt": {"kind": "video", "path": str(corrupt)},
        "tiny_image": {"kind": "image", "path": str(tiny), "duration": 1},
        "trim_beyond": {"kind": "video", "path": str(GRID), "trim": {"start": 1.0, "end": 9.0}},
        "missing": {"kind": "video", "path": str(tmp_path / "nope.mp4")},
        "outside_roots": {"kind": "video", "path": "/etc/passwd"},
        "fade_too_long": {"kind": "video", "path": str(GRID), "trim": {"end": 0.5}},
    }[case]
    options = {"output": draft(), "items": [item, {"kind": "video", "path": str(GRID)}]}
    if case == "fade_too_long":
        options["crossfade"] = 1.0
    with pytest.raises(MediaflowError) as err:
        await render_options(options, tmp_path)
    assert err.value.code == code, err.value.message
    assert not (tmp_path / "out.mp4").exists()


async def test_filter_graph_injection_through_text_and_file_names(tmp_path):
    """Hostile text in every text field and hostile file names: the render succeeds, does exactly
    what the timeline says (no extra filter, no file written elsewhere), and the text is shown."""
    evil_dir = tmp_path / "d'ir;[x] ,:=\\"
    evil_dir.mkdir()
    payload = "'];[0:v]drawbox=c=red:t=fill[v];movie=/etc/passwd,'\\"
    clip = make_clip(evil_dir / "clip ' ; [in] , = : \\.mp4", "640x360", 0.8)
    logo = make_image(evil_dir / "logo'];movie=x[,:.png", "64x64", "blue")
    canary = tmp_path / "pwned.txt"
    words = [payload, "{\\fs200\\c&H0000FF&}", f"';$(touch {canary})", "%{pts}", "\\N"]
    out, _, _ = await render_options(
        {
            "output": draft(),
            "items": [
                {
                    "kind": "video",
                    "path": str(clip),
                    "logo": {"path": str(logo)},
                    "text": {"words": words, "start": 0.0, "letter_delay": 0.0},
                }
            ],
        },
        tmp_path,
    )
    assert not canary.exists()
    frame = frame_at(out, 0.5).astype(int)
    # No full-frame red drawbox from the injected filter.
    assert not ((frame[..., 0] > 200) & (frame[..., 1] < 50) & (frame[..., 2] < 50)).mean() > 0.5
    # The text is rendered literally in the title style (yellow), not re-styled by injected ASS tags.
    yellow = (frame[..., 0] > 200) & (frame[..., 1] > 200) & (frame[..., 2] < 80)
    assert yellow.sum() > 500
    # Only our own generated names ever appear inside the filter graph.
    graph = list((tmp_path / "work").glob("*.ass"))
    assert graph and all("'" not in p.name for p in graph)
    assert np.isfinite(frame).all()


def _integrated_lufs(path: Path) -> float:
    err = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a", "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    summary = err.rsplit("Summary:", 1)[1]
    return float(summary.split("I:")[1].split("LUFS")[0])


async def test_loudness_normalisation(tmp_path):
    out, _, _ = await render_options(
        {
            "output": {**draft(), "loudnorm": True},
            "items": [{"kind": "video", "path": str(GRID)}, {"kind": "video", "path": str(BBB), "trim": {"end": 2.0}}],
        },
        tmp_path,
    )
    a = stream(ffprobe(out), "audio")
    assert (a["sample_rate"], a["channels"]) == ("48000", 2)
    assert abs(_integrated_lufs(out) - (-16.0)) < 2.5


async def test_4k_output(tmp_path):
    out, _, _ = await render_options(
        {
            "output": draft("3840x2160", 25),
            "items": [{"kind": "video", "path": str(BBB), "trim": {"start": 0.0, "end": 0.4}}],
        },
        tmp_path,
    )
    v = stream(ffprobe(out), "video")
    assert (v["width"], v["height"], v["codec_name"]) == (3840, 2160, "h264")
    assert video_frame_count(out) == 10


async def test_video_logo_longer_than_its_item_does_not_extend_it(tmp_path):
    """A logo cut from a video (5.3 s) on a 1.5 s item: the item keeps its length, audio and video agree."""
    out, _info, _plan = await render_options(
        {
            "output": draft(),
            "items": [
                {
                    "kind": "video",
                    "path": str(GRID),
                    "trim": {"start": 0.0, "end": 1.5},
                    "logo": {"path": str(BBB), "position": "bottom-left", "scale": 0.2},
                },
                {"kind": "video", "path": str(GRID), "trim": {"start": 0.0, "end": 2.0}},
            ],
        },
        tmp_path,
    )
    meta = ffprobe(out)
    video, audio = float(stream(meta, "video")["duration"]), float(stream(meta, "audio")["duration"])
    assert abs(video - 3.5) <= 1 / 25 + 1e-6
    assert abs(audio - video) < 0.05

"""Chunked renders are seamless: a timeline of consecutive trims of one continuous source, rendered in
chunks, must play its audio exactly as the source at every chunk join and stay in sync to the end.

The source's audio is pink noise (its cross-correlation has one sharp peak), so the lag of the output
against the source can be measured in short windows anywhere: a gap or overlap at a join shows as a
change of lag, drift as a lag at the end. Before the fix (AAC chunks joined by stream copy) each join
added 1024 samples (21.3 ms) of encoder priming: lag 0 → 21 → 43 → 64 ms over three chunks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from compositor_helpers import ffprobe, render_options, stream, video_frame_count

from mediaflow.compositor.config import CompositorConfig

SR = 48000
FPS = 25
ITEM = 0.2  # seconds, 5 frames
ITEMS = 26  # > 12 (the default chunk size): chunks of 12 + 12 + 2
AAC_FRAME = 1024 / SR  # ~21.3 ms
MAX_JOIN_GAP = 0.005


@pytest.fixture(scope="module")
def continuous_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip whose audio is continuous pink noise, stored as PCM (sample-exact reference)."""
    path = tmp_path_factory.mktemp("joins") / "continuous.mov"
    seconds = ITEMS * ITEM + 0.5
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s=640x360:r={FPS}:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"anoisesrc=c=pink:r={SR}:a=0.3:seed=7:d={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "pcm_s16le",
            "-ac",
            "2",
            "-shortest",
            str(path),
        ],
        check=True,
    )
    return path


def decode_mono(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(SR), "-f", "f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32)


def lag_at(out: np.ndarray, ref: np.ndarray, at: float, span: float = 0.02, search: float = 0.05) -> tuple[int, float]:
    """Lag in samples (output behind the source > 0) of the output window starting at `at` seconds, and
    the normalised correlation of the best match."""
    n0, n = round(at * SR), round(span * SR)
    window = out[n0 : n0 + n].astype(np.float64)
    lo = max(0, n0 - round(search * SR))
    segment = ref[lo : n0 + n + round(search * SR)].astype(np.float64)
    corr = np.correlate(segment, window, mode="valid")
    norm = np.sqrt(np.convolve(segment * segment, np.ones(n), mode="valid") * float(window @ window)) + 1e-12
    score = corr / norm
    k = int(np.argmax(score))
    return n0 - (lo + k), float(score[k])


@pytest.mark.parametrize(("captions", "strategy"), [("soft", "chunked-concat-copy"), ("burn", "chunked-final-graph")])
async def test_chunk_joins_are_seamless_and_in_sync(tmp_path, continuous_source, captions, strategy):
    items = [
        {
            "kind": "video",
            "path": str(continuous_source),
            "trim": {"start": round(k * ITEM, 6), "end": round((k + 1) * ITEM, 6)},
        }
        for k in range(ITEMS)
    ]
    # A soft track is muxed at the concat join; burned captions span the whole timeline, so those
    # chunks are joined by a final graph.
    srt = tmp_path / "captions.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:03,000\nhello\n")
    extra = {captions: srt}
    options = {"output": {"resolution": "1280x720", "fps": FPS, "quality": "draft", "encoder": "x264"}, "items": items}
    config = CompositorConfig()
    out, info, _ = await render_options(options, tmp_path, roots=[continuous_source.parent], config=config, **extra)
    assert info == {"strategy": strategy, "chunks": 3}

    expected = ITEMS * ITEM
    probed = ffprobe(out)
    video, audio = stream(probed, "video"), stream(probed, "audio")
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", SR, 2)
    assert video_frame_count(out) == round(expected * FPS)
    assert abs(float(video["duration"]) - expected) <= 1 / FPS + 1e-6
    assert abs(float(audio["duration"]) - float(video["duration"])) <= AAC_FRAME
    subtitles = [s["codec_name"] for s in probed["streams"] if s["codec_type"] == "subtitle"]
    assert subtitles == (["mov_text"] if captions == "soft" else [])

    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True, text=True
    )
    assert decoded.returncode == 0 and decoded.stderr.strip() == ""

    ref, got = decode_mono(continuous_source), decode_mono(out)
    assert abs(len(got) / SR - expected) <= AAC_FRAME
    joins = [k * config.chunk_items * ITEM for k in range(1, 3)]
    for t in joins:
        (before, c1), (after, c2) = lag_at(got, ref, t - 0.025), lag_at(got, ref, t + 0.002)
        assert min(c1, c2) > 0.6, (t, c1, c2)  # the window matches the source: no silence, no click
        assert abs(after - before) <= MAX_JOIN_GAP * SR, (t, before, after)
        assert abs(after) <= MAX_JOIN_GAP * SR, (t, after)
    # In sync everywhere, to the end (no drift), and the audio matches the source throughout.
    profile = [lag_at(got, ref, t) for t in np.arange(0.0, expected - 0.03, 0.1)]
    assert max(abs(lag) for lag, _ in profile) <= MAX_JOIN_GAP * SR, profile
    assert np.median([score for _, score in profile]) > 0.85, profile
    end_lag, _ = lag_at(got, ref, expected - 0.03)
    assert abs(end_lag) <= 0.001 * SR

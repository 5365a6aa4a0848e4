"""Real jobs through the CLI against `mediaflow up` with both worker kinds: transcribe (the real
Whisper model), the demo's caption job (transcribe -> burn in + soft track), and compose of a local
timeline whose files the CLI uploads."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import srt
from up_support import UpProcess, cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    up = UpProcess(tmp_path_factory.mktemp("cli-jobs") / "data", workers="transcriber,compositor").start()
    up.wait_for(r"compositor ready", 60)
    yield up
    up.stop()


def test_transcribe_writes_captions_and_transcript(server: UpProcess, media: Path, tmp_path: Path) -> None:
    run = cli(
        "transcribe",
        str(media / "jfk.flac"),
        "--language",
        "en",
        "--formats",
        "srt,vtt,json,txt",
        "--out",
        str(tmp_path / "jfk"),
        env=server.client_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    written = sorted(p.name for p in (tmp_path / "jfk").iterdir())
    assert written == ["captions.srt", "captions.vtt", "transcript.json", "transcript.txt"]
    text = (tmp_path / "jfk" / "transcript.txt").read_text().lower()
    assert "ask not what your country can do for you" in text
    assert "ask not what your country" in run.stdout.lower()  # the CLI prints the transcript
    cues = list(srt.parse((tmp_path / "jfk" / "captions.srt").read_text()))
    assert cues and cues[-1].end.total_seconds() <= 11.5
    assert (tmp_path / "jfk" / "captions.vtt").read_text().startswith("WEBVTT")
    assert json.loads((tmp_path / "jfk" / "transcript.json").read_text())["language"] == "en"


def test_demo_captions_the_bundled_sample(server: UpProcess, tmp_path: Path) -> None:
    """`make demo` runs `mediaflow demo`; with MEDIAFLOW_URL set it uses that server."""
    out_dir = tmp_path / "demo"
    run = cli("demo", "--out", str(out_dir), env=server.client_env(), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.search(r"demo done: caption job j_\w+ → outputs in " + re.escape(str(out_dir)), run.stdout)
    for name in ("output.mp4", "captions.srt", "captions.vtt", "transcript.txt", "ffmpeg.log"):
        assert (out_dir / name).stat().st_size > 0, name
    assert list(srt.parse((out_dir / "captions.srt").read_text()))
    with av.open(str(out_dir / "output.mp4")) as container:
        kinds = sorted(s.type for s in container.streams)
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (1280, 720)
    assert kinds == ["audio", "subtitle", "video"]  # mode "both": burned in and a soft track


def test_compose_uploads_the_timeline_files(server: UpProcess, media: Path, tmp_path: Path) -> None:
    shutil.copy(media / "big_buck_bunny_small.mp4", tmp_path / "intro.mp4")
    shutil.copy(media / "grid_bbaf2n.mp4", tmp_path / "talk.mp4")
    timeline = tmp_path / "timeline.json"
    timeline.write_text(
        json.dumps(
            {
                "output": {"resolution": "1280x720", "quality": "draft"},
                "items": [
                    {"kind": "intro", "file": "intro.mp4", "trim": {"start": 0, "end": 2}},
                    {"kind": "video", "path": "talk.mp4", "trim": {"start": 0.5, "end": 2}},
                ],
            }
        )
    )
    run = cli(
        "compose", str(timeline), "--out", str(tmp_path / "out"), env=server.client_env(), cwd=tmp_path, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("uploaded ") == 2
    with av.open(str(tmp_path / "out" / "output.mp4")) as container:
        duration = container.duration / av.time_base
        assert container.streams.video[0].codec_context.width == 1280
    assert duration == pytest.approx(3.5, abs=0.2)

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


def test_search_finds_words_of_a_transcript(server: UpProcess, media: Path, tmp_path: Path) -> None:
    """`mediaflow search` against the real index: a transcribed clip's words, highlighted."""
    env = server.client_env()
    clip = str(media / "jfk.flac")
    run = cli("transcribe", clip, "--language", "en", "--formats", "txt", "--out", str(tmp_path), env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    as_json = cli("search", "Country", "--json", env=env, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    hits = json.loads(as_json.stdout)["hits"]
    assert hits and all("<mark>country</mark>" in h["snippet"] and h["start"] < h["end"] for h in hits)
    shown = cli("search", "country ask", env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert hits[0]["job_id"] in shown.stdout and "ask not what your country" in shown.stdout.lower()
    assert cli("search", "zebra", env=env, timeout=60).stdout.strip() == "no matches"
    bad = cli("search", "?!", env=env, timeout=60)
    assert bad.returncode == 1 and "invalid_query" in bad.stderr


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


def test_caption_of_many_files_is_one_batch(server: UpProcess, media: Path, tmp_path: Path) -> None:
    """`mediaflow caption *.mp4 --burn`: one batch, a progress line per file and a total, each file's
    captioned video in its own folder; a missing file is left out with a warning, not a failure."""
    for name in ("jfk_talk.mp4", "grid_bbaf2n.mp4"):
        shutil.copy(media / name, tmp_path / name)
    files = [str(tmp_path / "jfk_talk.mp4"), str(tmp_path / "grid_bbaf2n.mp4"), str(tmp_path / "missing.mp4")]
    out_dir = tmp_path / "out"
    run = cli("caption", *files, "--burn", "--out", str(out_dir), env=server.client_env(), timeout=600)
    assert run.returncode == 0, run.stderr
    assert "missing.mp4: not a file; left out" in run.stderr
    assert "total (2 files)" in run.stderr and "jfk_talk.mp4" in run.stderr and "grid_bbaf2n.mp4" in run.stderr
    batch_id = re.search(r"batch (b_\w+): succeeded", run.stdout).group(1)
    for stem in ("jfk_talk", "grid_bbaf2n"):
        assert (out_dir / stem / "output.mp4").stat().st_size > 0
        assert list(srt.parse((out_dir / stem / "captions.srt").read_text())), stem
        with av.open(str(out_dir / stem / "output.mp4")) as container:
            assert sorted(s.type for s in container.streams) == ["audio", "video"]  # burned in, no soft track
    assert "ask not what your country" in (out_dir / "jfk_talk" / "transcript.txt").read_text().lower()
    shown = cli("batches", "show", batch_id, env=server.client_env(), timeout=60)
    assert shown.returncode == 0 and '"state": "succeeded"' in shown.stdout

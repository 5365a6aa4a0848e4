"""Three hours of audio in bounded memory: the media is decoded and transcribed in windows, so peak
RSS for 3 h is about that of an 11 s clip. The 3 h are mostly silence (skipped before the VAD), which
keeps this test's run time to the decoding of 3 h plus two short passages of speech."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, resource, sys
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.model import get_models
from mediaflow.transcriber.service import run_transcription

models = get_models(Settings())
transcript = run_transcription(models, sys.argv[1], TranscribeOptions())
words = transcript.words()
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "duration": transcript.duration, "text": transcript.text,
                  "first": words[0].start if words else None, "last": words[-1].end if words else None}))
"""

HOURS = 3


def run(path) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_three_hours_in_bounded_memory(media, tmp_path):
    long_file = tmp_path / "three_hours.flac"
    mono = "aresample=16000,aformat=channel_layouts=mono"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(media / "jfk.flac"),
            "-f",
            "lavfi",
            "-t",
            str(HOURS * 3600),
            "-i",
            "anullsrc=r=16000:cl=mono",
            "-i",
            str(media / "jfk.flac"),
            "-filter_complex",
            f"[0:a]{mono}[a];[1:a]anull[b];[2:a]{mono}[c];[a][b][c]concat=n=3:v=0:a=1",
            "-c:a",
            "flac",
            str(long_file),
        ],
        check=True,
        timeout=600,
    )
    short = run(media / "jfk.flac")
    long = run(long_file)
    assert abs(long["duration"] - (HOURS * 3600 + 22)) < 1.0
    assert long["text"].lower().count("not what your country can do for you") == 2  # both passages
    assert long["first"] < 1.0 and long["last"] > HOURS * 3600 + 11
    # 3 h of float32 PCM alone would be 660 MiB; the windowed pipeline stays within 150 MiB of a short clip
    assert long["peak_mib"] - short["peak_mib"] < 150, (short["peak_mib"], long["peak_mib"])
    print(json.dumps({"peak_mib_11s": short["peak_mib"], "peak_mib_3h": long["peak_mib"]}))

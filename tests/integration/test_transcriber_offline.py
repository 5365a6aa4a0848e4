"""A self-hosted product never phones home: no network connection is attempted while the worker
loads its models and transcribes (with diarization), even with no offline variables set by the caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, socket, sys

attempts = []

def is_local(address):
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = str(address[0])
    return host in ("localhost", "::1", "0.0.0.0", "::") or host.startswith("127.")

def hook(event, args):
    if event == "socket.connect" and not is_local(args[1]):
        attempts.append(["connect", repr(args[1])])
    elif event == "socket.getaddrinfo" and not is_local((args[0],)):
        attempts.append(["getaddrinfo", repr(args[0])])

sys.addaudithook(hook)

from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.model import get_models
from mediaflow.transcriber.service import run_transcription

models = get_models(Settings())
transcript = run_transcription(models, sys.argv[1], TranscribeOptions(diarize=True, num_speakers=2))
print(json.dumps({"attempts": attempts, "text": transcript.text, "speakers": transcript.speakers}))
"""


def test_no_network_during_load_and_transcription(media):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED", "TRANSFORMERS_OFFLINE")
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(media / "pyannote_sample.wav")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert "new jersey" in result["text"].lower()
    assert result["speakers"] == ["SPEAKER_00", "SPEAKER_01"]

"""Automatic speaker counting of the offline diarizer on real recordings with the real model: a monologue
is one speaker, while explicit speaker bounds still win (two speakers on pyannote_sample.wav are checked,
with the DER, in test_transcriber_pipeline.py)."""

from __future__ import annotations

import pytest

from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.model import Models, get_models
from mediaflow.transcriber.service import run_transcription


@pytest.fixture(scope="session")
def models() -> Models:
    return get_models(Settings())  # the process-wide model, shared with the other transcriber tests


@pytest.mark.parametrize("name", ["jfk.flac", "sonnet001_librivox.mp3", "grid_bbaf2n.mp4"])
def test_monologue_is_one_speaker(models, media, name):
    transcript = run_transcription(models, media / name, TranscribeOptions(diarize=True))
    assert transcript.words()
    assert transcript.speakers == ["SPEAKER_00"]
    assert {w.speaker for w in transcript.words()} == {"SPEAKER_00"}
    assert [t.speaker for t in transcript.turns] == ["SPEAKER_00"]


def test_min_speakers_still_forces_a_second_speaker(models, media):
    transcript = run_transcription(models, media / "jfk.flac", TranscribeOptions(diarize=True, min_speakers=2))
    assert transcript.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert {w.speaker for w in transcript.words()} == {"SPEAKER_00", "SPEAKER_01"}

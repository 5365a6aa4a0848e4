"""Speaker names without the model: one-to-one matching at the threshold, renaming, and the names in
every caption and transcript file (read back with the formats' own parsers)."""

from __future__ import annotations

import io
import json

import numpy as np
import pysubs2
import pytest
import webvtt

from mediaflow.common.errors import NotFound
from mediaflow.common.jobs.voices import Voice
from mediaflow.common.options.transcribe import CaptionRules
from mediaflow.transcriber.captions import render
from mediaflow.transcriber.speakers import apply_names, match, rename
from mediaflow.transcriber.transcript import Segment, Transcript, Word
from mediaflow.transcriber.transcript import Voice as Found


def unit(*xs: float) -> list[float]:
    v = np.array(xs, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def transcript() -> Transcript:
    words = [
        Word(text="Hello", start=0.0, end=0.5, speaker="SPEAKER_00"),
        Word(text="there.", start=0.5, end=1.0, speaker="SPEAKER_00"),
        Word(text="Hi.", start=2.0, end=2.5, speaker="SPEAKER_01"),
    ]
    return Transcript(
        language="en",
        duration=3.0,
        segments=[
            Segment(id=0, start=0.0, end=1.0, text="Hello there.", words=words[:2], speaker="SPEAKER_00"),
            Segment(id=1, start=2.0, end=2.5, text="Hi.", words=words[2:], speaker="SPEAKER_01"),
        ],
        speakers=["SPEAKER_00", "SPEAKER_01"],
        voices=[
            Found(label="SPEAKER_00", seconds=1.0, embedding=unit(1, 0.1, 0)),
            Found(label="SPEAKER_01", seconds=0.5, embedding=unit(0.1, 1, 0)),
        ],
    )


def test_match_names_one_speaker_per_enrolled_voice_above_the_threshold():
    t = transcript()
    diane = Voice(id="v_1", name="Diane", state="ready", embedding=unit(1, 0, 0))
    far = Voice(id="v_2", name="Far", state="ready", embedding=unit(0, 0, 1))
    match(t.voices, [diane, far], threshold=0.5)
    apply_names(t)
    assert [(v.name, v.speaker_id) for v in t.voices] == [("Diane", "v_1"), (None, None)]
    assert t.voices[0].similarity == pytest.approx(float(np.dot(unit(1, 0.1, 0), unit(1, 0, 0))), abs=1e-4)
    assert [s.speaker_name for s in t.segments] == ["Diane", None]

    # both found speakers resemble Diane: only the closer one takes the name
    t = transcript()
    t.voices[1].embedding = unit(1, 0.3, 0)
    match(t.voices, [diane], threshold=0.5)
    assert [v.name for v in t.voices] == ["Diane", None]


def test_rename_and_every_file_shows_the_names():
    t = transcript()
    rename(t, {"SPEAKER_00": "Diane Smith", "SPEAKER_01": "Sheila"})
    rename(t, {"SPEAKER_01": None})  # dropped again
    with pytest.raises(NotFound) as err:
        rename(t, {"SPEAKER_09": "Eve"})
    assert err.value.code == "speaker_label_not_found"

    rules = CaptionRules(speaker_labels=True, karaoke=True)
    files = render(t, ["srt", "vtt", "ass", "json", "txt"], rules)
    srt = pysubs2.SSAFile.from_string(files["captions.srt"][0].decode())
    assert [e.plaintext for e in srt] == ["Diane Smith: Hello there.", "SPEAKER_01: Hi."]
    vtt = webvtt.from_buffer(io.StringIO(files["captions.vtt"][0].decode()))
    assert [(c.voice, c.text) for c in vtt] == [
        ("Diane Smith", "Diane Smith: Hello there."),
        ("SPEAKER_01", "SPEAKER_01: Hi."),
    ]
    ass = pysubs2.SSAFile.from_string(files["captions.ass"][0].decode())
    assert ass[0].plaintext.startswith("Diane Smith: Hello") and r"{\k" in ass[0].text
    data = json.loads(files["transcript.json"][0])
    assert [(v["label"], v["name"], v["similarity"]) for v in data["voices"]] == [
        ("SPEAKER_00", "Diane Smith", None),
        ("SPEAKER_01", None, None),
    ]
    assert "embedding" not in data["voices"][0]
    assert files["transcript.txt"][0].decode() == "Diane Smith: Hello there.\n\nSPEAKER_01: Hi.\n"
    prints = json.loads(files["speakers.json"][0])["speakers"]
    assert prints[0]["name"] == "Diane Smith" and len(prints[0]["embedding"]) == 3

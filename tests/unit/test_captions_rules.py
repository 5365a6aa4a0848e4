"""Caption rules and formats on a synthetic transcript, read back by independent parsers."""

from __future__ import annotations

import io
import itertools
import subprocess

import pycaption
import pysubs2
import pytest
import srt
import webvtt

from mediaflow.common.options.transcribe import CaptionRules
from mediaflow.transcriber.captions import build_cues, render
from mediaflow.transcriber.captions.scc import SCC_COLUMNS, SCC_ROWS
from mediaflow.transcriber.transcript import Segment, Transcript, Word

TEXT = (
    "So this is a fairly long sentence that should wrap across lines and cues properly. "
    "Then another speaker answers with some words of their own, quickly. "
    "Supercalifragilisticexpialidocious-and-then-some-more-letters is one very long token."
)


def make_transcript(speakers: bool = True) -> Transcript:
    words, t = [], 0.5
    for i, token in enumerate(TEXT.split()):
        speaker = ("SPEAKER_00" if i < 15 else "SPEAKER_01") if speakers else None
        words.append(Word(text=token, start=t, end=t + 0.3, speaker=speaker))
        t += 0.35 + (1.5 if token.endswith("properly.") else 0.0)
    segs = [
        Segment(
            id=0,
            start=words[0].start,
            end=words[-1].end,
            text=" ".join(w.text for w in words),
            words=words,
            speaker=None,
        )
    ]
    return Transcript(
        language="en", duration=t + 2, segments=segs, speakers=["SPEAKER_00", "SPEAKER_01"] if speakers else []
    )


@pytest.mark.parametrize(
    "rules",
    [
        CaptionRules(),
        CaptionRules(max_chars_per_line=20, max_lines=1, max_duration=3.0, min_duration=1.5),
        CaptionRules(max_chars_per_line=32, max_lines=3, speaker_labels=True, max_cps=12),
    ],
)
def test_cues_hold_the_rules(rules: CaptionRules):
    transcript = make_transcript()
    cues = build_cues(transcript, rules)
    assert cues
    for prev, cue in zip([None, *cues], cues, strict=False):
        assert all(len(line) <= rules.max_chars_per_line for line in cue.lines), cue.lines
        assert len(cue.lines) <= rules.max_lines or len(cue.words) == 1, cue.lines
        assert cue.end - cue.start <= rules.max_duration + 1e-6
        assert cue.end > cue.start
        if prev is not None:
            assert cue.start >= prev.end - 1e-6, "cues overlap"
        if rules.break_on_speaker_change:
            assert len({w.speaker for w in cue.words}) == 1
    # min_duration holds wherever the next cue leaves room
    for cue, nxt in itertools.pairwise(cues):
        if nxt.start - cue.start >= rules.min_duration + 0.05:
            assert cue.end - cue.start >= rules.min_duration - 1e-6
    # every word shows up exactly once, in order
    shown = [w for c in cues for w in c.words]
    assert shown == transcript.words()
    if rules.speaker_labels:
        assert cues[0].lines[0].startswith("SPEAKER_00:")
        assert any(c.lines[0].startswith("SPEAKER_01:") for c in cues)


def test_cps_is_met_where_there_is_room():
    words = [Word(text=w, start=i * 0.2, end=i * 0.2 + 0.15) for i, w in enumerate(["one", "two", "three"])]
    transcript = Transcript(
        language="en", duration=10.0, segments=[Segment(id=0, start=0, end=0.55, text="one two three", words=words)]
    )
    cue = build_cues(transcript, CaptionRules(max_cps=5, min_duration=0.5))[0]
    assert len(cue.text) / (cue.end - cue.start) <= 5 + 1e-6


def test_formats_parse_back_with_independent_parsers(tmp_path):
    rules = CaptionRules(max_chars_per_line=30, max_lines=2, speaker_labels=True, karaoke=True)
    transcript = make_transcript()
    files = render(transcript, ["srt", "vtt", "scc", "ass", "json", "txt"], rules)
    assert set(files) == {
        "captions.srt",
        "captions.vtt",
        "captions.scc",
        "captions.ass",
        "transcript.json",
        "transcript.txt",
    }
    cues = build_cues(transcript, rules)

    subs = list(srt.parse(files["captions.srt"][0].decode()))
    assert len(subs) == len(cues)
    assert all(len(line) <= 30 for s in subs for line in s.content.split("\n"))
    assert abs(subs[0].start.total_seconds() - cues[0].start) < 0.002

    vtt = webvtt.from_buffer(io.StringIO(files["captions.vtt"][0].decode()))
    assert len(vtt.captions) == len(cues)
    assert vtt.captions[0].text.split("\n") == cues[0].lines

    ass = pysubs2.SSAFile.from_string(files["captions.ass"][0].decode())
    assert len(ass.events) == len(cues)
    assert r"{\k" in ass.events[0].text
    assert ass.events[0].plaintext.replace(" ", "") == cues[0].text.replace(" ", "")
    assert ass.styles["Default"].outline > 0

    text = files["transcript.txt"][0].decode()
    assert text.startswith("SPEAKER_00:") and "SPEAKER_01:" in text


def test_scc_is_cea608_and_reads_back(tmp_path):
    transcript = make_transcript(speakers=False)
    scc = render(transcript, ["scc"], CaptionRules(max_chars_per_line=42, max_lines=2))["captions.scc"][0].decode()
    assert scc.startswith("Scenarist_SCC V1.0")
    lines = [line for line in scc.splitlines()[1:] if line.strip()]
    for line in lines:
        timecode, _, codes = line.partition("\t")
        assert ";" in timecode  # drop-frame timecode hh:mm:ss;ff
        _hh, _mm, rest = timecode.split(":")
        _ss, ff = rest.split(";")
        assert int(ff) < 30
        for word in codes.split():
            for byte in bytes.fromhex(word):
                assert bin(byte).count("1") % 2 == 1, f"byte {byte:02x} is not odd parity"
    assert "9420" in scc and "942f" in scc  # RCL (pop-on) and EOC
    captions = pycaption.SCCReader().read(scc).get_captions("en-US")
    assert captions
    for caption in captions:
        rows = caption.get_text().split("\n")
        assert len(rows) <= SCC_ROWS
        assert all(len(r) <= SCC_COLUMNS for r in rows)
    path = tmp_path / "captions.scc"
    path.write_text(scc)
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "srt", "-"], capture_output=True, text=True, check=True
    ).stdout
    parsed = list(srt.parse(out))
    assert len(parsed) == len(captions)
    assert "fairly long sentence" in " ".join(p.content.replace("\n", " ") for p in parsed)

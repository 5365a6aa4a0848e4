"""Analytics, extractive summary and keywords: computed locally from the transcript."""

from __future__ import annotations

from mediaflow.transcriber.analytics import analytics, extractive_summary, keywords
from mediaflow.transcriber.transcript import Segment, SpeakerTurn, Transcript, Word

TEXT = (
    "Hello? Hello? Welcome to the quarterly budget review for the northern region. "
    "The budget for the northern region grew by ten percent this quarter. Okay. "
    "Marketing spent less than planned, so the surplus moves to engineering hiring. "
    "Engineering hiring will double the platform team before the next budget review. Thanks, bye."
)


def transcript() -> Transcript:
    words, t = [], 0.0
    for i, token in enumerate(TEXT.split()):
        words.append(Word(text=token, start=t, end=t + 0.3, speaker="SPEAKER_00" if i < 20 else "SPEAKER_01"))
        t += 0.4
    segs = [Segment(id=0, start=0, end=t, text=TEXT, words=words)]
    turns = [SpeakerTurn(speaker="SPEAKER_00", start=0, end=8.0), SpeakerTurn(speaker="SPEAKER_01", start=8.0, end=t)]
    return Transcript(language="en", duration=60.0, segments=segs, speakers=["SPEAKER_00", "SPEAKER_01"], turns=turns)


def test_counts_and_per_speaker_stats():
    result = analytics(transcript())
    assert result["word_count"] == len(TEXT.split())
    assert result["words_per_minute"] == float(len(TEXT.split()))  # 60 s of media
    assert result["speaker_count"] == 2
    a, b = result["speakers"]["SPEAKER_00"], result["speakers"]["SPEAKER_01"]
    assert a["words"] == 20 and b["words"] == len(TEXT.split()) - 20
    assert a["turns"] == 1 and b["turns"] == 1
    assert abs(a["speaking_time"] - 20 * 0.3) < 1e-6 and a["words_per_minute"] == 200.0


def test_summary_is_extractive_and_skips_fragments():
    summary = extractive_summary(TEXT, max_sentences=2)
    assert summary and all(part.strip(". ") in TEXT for part in summary.split(". "))
    assert "Hello?" not in summary and "Okay" not in summary
    assert len(summary) < len(TEXT)


def test_keywords_are_content_terms():
    found = keywords(TEXT, top=5)
    assert found and len(found) <= 5
    assert any("budget" in k for k in found) and any("engineering" in k or "northern" in k for k in found)
    assert not {"hello", "okay", "the", "for"} & set(found)
    assert keywords("") == [] and keywords("Okay. Hello.") == []

"""transcript.json (segments, words with times and speakers, language, analytics), transcript.txt and
speakers.rttm (the diarization in NIST RTTM, the format diarization tools score and exchange) and
vocabulary.json (the words heard, for learners)."""

from __future__ import annotations

import json

from ..transcript import Transcript


def to_json(transcript: Transcript) -> str:
    data = transcript.model_dump(mode="json")
    data["text"] = transcript.text
    return json.dumps(data, ensure_ascii=False, indent=1)


def to_txt(transcript: Transcript) -> str:
    """Plain text; with speakers, one paragraph per speaker turn (runs of words by one speaker)."""
    if not transcript.speakers:
        return transcript.text + "\n" if transcript.text else ""
    paragraphs: list[tuple[str | None, list[str]]] = []
    for seg in transcript.segments:
        pieces = [(w.speaker or seg.speaker, w.text) for w in seg.words] or [(seg.speaker, seg.text)]
        for speaker, text in pieces:
            if not paragraphs or paragraphs[-1][0] != speaker:
                paragraphs.append((speaker, []))
            paragraphs[-1][1].append(text)
    return (
        "\n\n".join(f"{transcript.speaker_display(sp)}: {' '.join(t)}" if sp else " ".join(t) for sp, t in paragraphs)
        + "\n"
    )


def to_speakers(transcript: Transcript) -> str:
    """speakers.json: each diarized speaker's name (when known), similarity, speech seconds and voice
    print (unit-normalised speaker embedding), what `POST /v1/speakers` enrolls from."""
    voices = [{**v.model_dump(mode="json"), "embedding": [round(x, 6) for x in v.embedding]} for v in transcript.voices]
    return json.dumps({"speakers": voices}, ensure_ascii=False, indent=1)


def to_rttm(transcript: Transcript, uri: str = "media") -> str:
    return "".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
        for t in transcript.diarization
        if t.end > t.start
    )


def to_vocabulary(transcript: Transcript) -> str:
    """vocabulary.json: the words heard, for learners (see `analytics.vocabulary`)."""
    from ..analytics import vocabulary

    data = {
        "language": transcript.language,
        "range": transcript.range.model_dump() if transcript.range else None,
        "normalisation": "lowercase, punctuation stripped (not lemmatised)",
        "difficulty_scale": "1 (commonest, zipf >= 6) .. 5 (rare, zipf < 3); wordfreq Zipf frequency",
        "entries": vocabulary(transcript),
    }
    return json.dumps(data, ensure_ascii=False, indent=1)

"""transcript.json (segments, words with times and speakers, language, analytics) and transcript.txt."""

from __future__ import annotations

import json

from ..transcript import Transcript


def to_json(transcript: Transcript) -> str:
    data = transcript.model_dump(mode="json")
    data["text"] = transcript.text
    return json.dumps(data, ensure_ascii=False, indent=1)


def to_txt(transcript: Transcript) -> str:
    """Plain text, one paragraph per speaker turn (or per segment group without diarization)."""
    if not transcript.speakers:
        return transcript.text + "\n" if transcript.text else ""
    paragraphs: list[str] = []
    speaker = None
    for seg in transcript.segments:
        if seg.speaker != speaker or not paragraphs:
            paragraphs.append(f"{seg.speaker}: {seg.text}" if seg.speaker else seg.text)
            speaker = seg.speaker
        else:
            paragraphs[-1] += " " + seg.text
    return "\n\n".join(paragraphs) + "\n"

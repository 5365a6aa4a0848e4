"""transcript.json (segments, words with times and speakers, language, analytics) and transcript.txt."""

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
    return "\n\n".join(f"{sp}: {' '.join(t)}" if sp else " ".join(t) for sp, t in paragraphs) + "\n"

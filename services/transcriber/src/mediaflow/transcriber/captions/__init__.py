"""Caption and transcript files. `render(transcript, formats, rules)` -> {artifact name: (bytes, type)}."""

from __future__ import annotations

from mediaflow.common.jobs.voices import SPEAKERS_ARTIFACT  # voice prints and names (offline diarizer)
from mediaflow.common.options.transcribe import CaptionRules

from ..transcript import Transcript
from .cues import Cue, build_cues
from .scc import SCC_COLUMNS, SCC_ROWS, to_scc
from .subtitles import to_ass, to_srt, to_vtt
from .transcript_files import to_json, to_rttm, to_speakers, to_txt, to_vocabulary
from .translated import bilingual_cues, in_target_language

ARTIFACT_NAMES = {
    "srt": "captions.srt",
    "vtt": "captions.vtt",
    "scc": "captions.scc",
    "ass": "captions.ass",
    "json": "transcript.json",
    "txt": "transcript.txt",
}
RTTM_ARTIFACT = "speakers.rttm"  # written whenever the transcript was diarized
VOCABULARY_ARTIFACT = "vocabulary.json"  # written when options.vocabulary is true
CONTENT_TYPES = {
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "scc": "text/x-scc",
    "ass": "text/x-ssa",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
}


def render(
    transcript: Transcript, formats: list[str], rules: CaptionRules, vocabulary: bool = False, bilingual: bool = False
) -> dict[str, tuple[bytes, str]]:
    """Captions in the translation's language when the transcript has one (both with `bilingual`);
    transcript.json/.txt always hold the original (and transcript.json the translation)."""
    out: dict[str, tuple[bytes, str]] = {}
    shown = in_target_language(transcript)
    cues: list[Cue] = []
    if {"srt", "vtt", "ass"} & set(formats):
        cues = bilingual_cues(transcript, rules) if bilingual and transcript.translation else build_cues(shown, rules)
    for fmt in formats:
        if fmt == "srt":
            text = to_srt(cues)
        elif fmt == "vtt":
            text = to_vtt(cues)
        elif fmt == "ass":
            # karaoke highlights the words of one language; bilingual cues hold two
            text = to_ass(cues, karaoke=rules.karaoke and not (bilingual and transcript.translation))
        elif fmt == "scc":
            text = to_scc(build_cues(shown, rules, max_chars=SCC_COLUMNS, max_lines=SCC_ROWS))
        elif fmt == "json":
            text = to_json(transcript)
        elif fmt == "txt":
            text = to_txt(transcript)
        else:
            continue
        out[ARTIFACT_NAMES[fmt]] = (text.encode("utf-8"), CONTENT_TYPES[fmt])
    if transcript.diarization:
        out[RTTM_ARTIFACT] = (to_rttm(transcript).encode("utf-8"), "text/plain; charset=utf-8")
    if transcript.voices:
        out[SPEAKERS_ARTIFACT] = (to_speakers(transcript).encode("utf-8"), "application/json")
    if vocabulary:
        out[VOCABULARY_ARTIFACT] = (to_vocabulary(transcript).encode("utf-8"), "application/json")
    return out


__all__ = [
    "ARTIFACT_NAMES",
    "CONTENT_TYPES",
    "RTTM_ARTIFACT",
    "SPEAKERS_ARTIFACT",
    "VOCABULARY_ARTIFACT",
    "Cue",
    "build_cues",
    "render",
]

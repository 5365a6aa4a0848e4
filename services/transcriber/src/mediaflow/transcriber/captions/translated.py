"""Captions of a translated transcript (`options.translate_to`): in the target language, or both
languages in each cue (`options.bilingual`, original first)."""

from __future__ import annotations

import bisect

from mediaflow.common.options.transcribe import CaptionRules

from ..transcript import Segment, Transcript
from .cues import Cue, _timed_words, build_cues, wrap


def in_target_language(transcript: Transcript) -> Transcript:
    """The transcript the captions show: its translation (words spread over each segment's time by
    their length, as a translation has no word times), or the transcript itself."""
    if transcript.translation is None:
        return transcript
    segments = [
        Segment(id=i, start=s.start, end=s.end, text=s.text) for i, s in enumerate(transcript.translation.segments)
    ]
    return Transcript(language=transcript.translation.language, duration=transcript.duration, segments=segments)


def bilingual_cues(transcript: Transcript, rules: CaptionRules) -> list[Cue]:
    """Cues of the original (half the lines each), each followed by the translated words whose middle
    falls in it: the two languages stay in step even where their segments differ."""
    cues = build_cues(transcript, rules.model_copy(update={"max_lines": max(1, rules.max_lines // 2)}))
    if not cues:
        return cues
    starts = [c.start for c in cues]
    translated: list[list[str]] = [[] for _ in cues]
    for word in _timed_words(in_target_language(transcript)):
        index = max(0, bisect.bisect_right(starts, (word.start + word.end) / 2) - 1)
        translated[index].append(word.text)
    for cue, words in zip(cues, translated, strict=True):
        cue.lines = cue.lines + wrap(words, rules.max_chars_per_line)
    return cues

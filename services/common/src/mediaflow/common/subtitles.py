"""SRT and WebVTT, written by pysubs2: the one subtitle writer of every service (the transcriber's
caption files, the gateway's OpenAI-compatible `response_format=srt|vtt`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import pysubs2

TextFormat = Literal["srt", "vtt"]


def subtitle_file(cues: Iterable[tuple[float, float, list[str]]]) -> pysubs2.SSAFile:
    """Cues as (start s, end s, lines); a line break inside a cue is kept."""
    subs = pysubs2.SSAFile()
    for start, end, lines in cues:
        subs.append(
            pysubs2.SSAEvent(
                start=round(max(0.0, start) * 1000), end=round(max(0.0, end) * 1000), text=r"\N".join(lines)
            )
        )
    return subs


def write_subtitles(cues: Iterable[tuple[float, float, list[str]]], fmt: TextFormat) -> str:
    return subtitle_file(cues).to_string(fmt)

"""SRT, WebVTT and ASS (styled; optional karaoke word highlighting) through pysubs2."""

from __future__ import annotations

import pysubs2

from mediaflow.common.subtitles import write_subtitles

from .cues import Cue

ASS_STYLE = pysubs2.SSAStyle(
    fontname="DejaVu Sans",
    fontsize=54,
    primarycolor=pysubs2.Color(255, 255, 255),
    secondarycolor=pysubs2.Color(255, 214, 0),  # the karaoke highlight
    outlinecolor=pysubs2.Color(0, 0, 0),
    backcolor=pysubs2.Color(0, 0, 0, 128),
    bold=False,
    outline=2.5,
    shadow=1.0,
    borderstyle=1,
    alignment=pysubs2.Alignment.BOTTOM_CENTER,
    marginv=48,
    marginl=64,
    marginr=64,
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def to_srt(cues: list[Cue]) -> str:
    return write_subtitles(((c.start, c.end, c.lines) for c in cues), "srt")


def _voice_lines(cue: Cue) -> list[str]:
    """A labelled WebVTT cue also names its speaker with a voice span (`<v Diane>Diane: …`): the span
    for programs, the visible prefix for players (browsers do not show voice names)."""
    if not cue.label or not cue.lines:
        return cue.lines
    return [f"<v {cue.label.removesuffix(':')}>{cue.lines[0]}", *cue.lines[1:]]


def to_vtt(cues: list[Cue]) -> str:
    return write_subtitles(((c.start, c.end, _voice_lines(c)) for c in cues), "vtt")


def _karaoke_text(cue: Cue) -> str:
    """{\\kNN} before each word (centiseconds it stays un-highlighted -> highlighted), keeping the
    cue's line breaks."""
    parts: list[str] = []
    words = iter(cue.words)
    clock = cue.start
    for line_no, line in enumerate(cue.lines):
        tokens = line.split(" ")
        if line_no and parts:
            parts.append(r"\N")
        for n, token in enumerate(tokens):
            if cue.label and line_no == 0 and n < len(cue.label.split(" ")):  # a name may hold spaces
                parts.append(token + " ")
                continue
            word = next(words, None)
            end = word.end if word else clock
            centis = max(0, round((end - clock) * 100))
            clock = max(clock, end)
            parts.append(f"{{\\k{centis}}}{token}" + (" " if n < len(tokens) - 1 else ""))
    return "".join(parts)


def to_ass(cues: list[Cue], karaoke: bool = False, title: str = "mediaflow captions") -> str:
    subs = pysubs2.SSAFile()
    subs.info["Title"] = title
    subs.info["PlayResX"], subs.info["PlayResY"] = "1920", "1080"
    subs.info["WrapStyle"] = "2"  # our line breaks are the only ones
    subs.info["ScaledBorderAndShadow"] = "yes"
    subs.styles["Default"] = ASS_STYLE.copy()
    for cue in cues:
        text = _karaoke_text(cue) if karaoke and cue.words else r"\N".join(cue.lines)
        subs.append(pysubs2.SSAEvent(start=_ms(cue.start), end=_ms(cue.end), text=text, style="Default"))
    return subs.to_string("ass")

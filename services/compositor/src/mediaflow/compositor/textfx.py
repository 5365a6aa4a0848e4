"""Text on video without text in the filter graph: titles and caption styles become generated ASS
files that libass renders. User text is only ever written *inside* such a file, escaped for ASS."""

from __future__ import annotations

from pathlib import Path

from mediaflow.common.options.compose import CaptionStyle, TextAnimation

# ASS override blocks start with { and escapes with a backslash: libass shows \{ and \} as braces, and
# a backslash followed by a word joiner (U+2060) as a plain backslash that starts no escape (\N, \h).
_ASS_ESCAPES = str.maketrans({"{": "\\{", "}": "\\}", "\\": "\\\u2060", "\n": " ", "\r": " "})
_ALIGN = {"bottom": 2, "center": 5, "top": 8}


def ass_text(text: str) -> str:
    """Literal text for an ASS Dialogue line: no override tags, no escapes, one line."""
    return text.translate(_ASS_ESCAPES)


def _ass_time(seconds: float) -> str:
    cs = max(0, round(seconds * 100))
    h, rem = divmod(cs, 360000)
    m, rem = divmod(rem, 6000)
    s, cs = divmod(rem, 100)
    return f"{h}:{m:02d}:{s:02d}.{cs:02d}"


def _header(width: int, height: int, style_line: str) -> str:
    return (
        "[Script Info]\nScriptType: v4.00+\nWrapStyle: 0\nScaledBorderAndShadow: yes\n"
        f"PlayResX: {width}\nPlayResY: {height}\n\n"
        "[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
        "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
        "Alignment, MarginL, MarginR, MarginV, Encoding\n"
        f"{style_line}\n\n"
        "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
    )


def title_ass(text: TextAnimation, width: int, height: int, item_duration: float) -> str:
    """A title whose letters appear one after another (`letter_delay` apart), from `start` to the end
    of the item: each letter is transparent until its moment, then opaque (\\alpha + \\t)."""
    size = max(8, round(text.size * height / 1080))
    outline = max(1, round(size / 18))
    style = (
        f"Style: Title,{text.font},{size},{text.color},{text.color},{text.outline_color},&H80000000,"
        f"{-1 if text.bold else 0},0,0,0,100,100,0,0,1,{outline},{max(1, outline // 2)},"
        f"{_ALIGN[text.position]},40,40,{round(height * 0.08)},1"
    )
    letters = " ".join(text.words)
    parts = []
    for i, ch in enumerate(letters):
        at = round(i * text.letter_delay * 1000)
        # Invisible until `at` ms after the line starts, then shown within 1 ms.
        parts.append(f"{{\\alpha&HFF&\\t({at},{at + 1},\\alpha&H00&)}}{ass_text(ch)}" if ch != " " else " ")
    start = min(text.start, max(0.0, item_duration - 0.04))
    line = f"Dialogue: 0,{_ass_time(start)},{_ass_time(item_duration + 1)},Title,,0,0,0,,{''.join(parts)}"
    return _header(width, height, style) + line + "\n"


def caption_force_style(style: CaptionStyle) -> str:
    """libass `force_style` for SRT captions. Only validated fields (font pattern, colour pattern,
    integers) go in, so the value needs no escaping beyond the filter-option quoting."""
    # libass lays SRT out on a 288-line canvas scaled to the video: 16 is about 5.5 % of the height.
    size = style.size or 16
    margin = style.margin or 18
    return (
        f"FontName={style.font},FontSize={size},PrimaryColour={style.color},"
        f"OutlineColour={style.outline_color},BorderStyle=1,Outline=2,Shadow=0,MarginV={margin}"
    )


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path

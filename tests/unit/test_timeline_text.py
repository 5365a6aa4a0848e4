"""Generated ASS for titles and captions: user text stays text."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaflow.common.errors import MediaflowError
from mediaflow.common.options.compose import CaptionStyle, TextAnimation
from mediaflow.compositor.graph import _safe_path, fit_size
from mediaflow.compositor.textfx import ass_text, caption_force_style, title_ass


def test_ass_text_cannot_open_override_blocks():
    assert ass_text("{\\b1}x\\N") == "\\{\\\u2060b1\\}x\\\u2060N"
    assert "\n" not in ass_text("a\nb")


def test_title_is_typed_letter_by_letter_in_bold_yellow():
    ass = title_ass(TextAnimation(words=["Hi", "you"], start=0.5, letter_delay=0.1), 1920, 1080, 3.0)
    style = next(line for line in ass.splitlines() if line.startswith("Style: Title"))
    assert ",&H0000FFFF," in style and style.split(",")[7] == "-1"  # yellow, bold
    dialogue = next(line for line in ass.splitlines() if line.startswith("Dialogue:"))
    assert dialogue.startswith("Dialogue: 0,0:00:00.50,0:00:04.00,Title,")
    # H at 0 ms, i at 100 ms, (space), y at 300 ms ... each letter hidden until its time.
    assert "\\t(0,1,\\alpha&H00&)}H" in dialogue and "\\t(100,101,\\alpha&H00&)}i" in dialogue
    assert "\\t(300,301,\\alpha&H00&)}y" in dialogue


def test_caption_force_style_has_only_validated_values():
    assert caption_force_style(CaptionStyle()).startswith("FontName=DejaVu Sans,FontSize=16,")


def test_safe_path_guard():
    assert _safe_path(Path("/tmp/mediaflow_compose_ab12/title-3.ass"))
    with pytest.raises(MediaflowError):
        _safe_path(Path("/tmp/x';movie=/etc/passwd"))


@pytest.mark.parametrize(
    ("src", "frame", "expected"),
    [
        ((1280, 720), (1920, 1080), (1920, 1080)),  # 16:9 into 16:9
        ((427, 240), (1920, 1080), (1920, 1078)),  # 320x240 flagged 16:9 (display 427x240)
        ((360, 288), (1920, 1080), (1350, 1080)),  # 5:4 pillarboxed
        ((1080, 1920), (1920, 1080), (608, 1080)),  # portrait (607.5 rounded, made even)
        ((4000, 1000), (1280, 720), (1280, 320)),  # very wide: letterboxed
    ],
)
def test_fit_size_keeps_display_aspect(src, frame, expected):
    assert fit_size(*src, *frame) == expected

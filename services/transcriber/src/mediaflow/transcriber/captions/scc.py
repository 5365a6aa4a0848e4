"""SCC (CEA-608 pop-on captions in Scenarist format) through pycaption.

CEA-608 limits: 32 columns, at most 4 rows, 29.97 fps drop-frame timecode. The cues handed in are
built with those limits (see `build_cues(max_chars=32, max_lines=4)`); pycaption does the byte
work: control codes (RCL/ENM/EOC/EDM, doubled), preamble address codes and odd parity.
"""

from __future__ import annotations

import unicodedata

from pycaption import Caption, CaptionNode, CaptionSet
from pycaption.scc import SCCWriter

from .cues import Cue

SCC_COLUMNS, SCC_ROWS = 32, 4


def _ascii(text: str) -> str:
    # CEA-608 has a small character set: fold accents and typographic quotes to ASCII.
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"').replace("…", "...")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def to_scc(cues: list[Cue]) -> str:
    captions = []
    for cue in cues:
        nodes = []
        for n, line in enumerate(cue.lines):
            if n:
                nodes.append(CaptionNode.create_break())
            nodes.append(CaptionNode.create_text(_ascii(line)))
        captions.append(Caption(round(cue.start * 1_000_000), round(cue.end * 1_000_000), nodes))
    caption_set = CaptionSet({"en": captions})
    return SCCWriter(drop_frame=True).write(caption_set)

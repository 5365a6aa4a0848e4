"""Caption cues from word timings, under per-request rules (CaptionRules).

Greedy: words join the current cue while its lines still fit (max_chars_per_line x max_lines), it
stays under max_duration, the speaker is the same (break_on_speaker_change) and there is no long
pause. Then timing: each cue is held for at least min_duration and long enough for max_cps where the
gap to the next cue allows; cues never overlap. Text is never dropped to satisfy reading speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediaflow.common.options.transcribe import CaptionRules

from ..transcript import Transcript, Word

PAUSE_SECONDS = 1.2  # a pause this long starts a new cue
MIN_GAP = 0.04  # a frame or so between consecutive cues


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None
    label: str = ""  # speaker label shown at the start of the cue, if any

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def chars(self) -> int:
        return sum(len(line) for line in self.lines) + max(0, len(self.lines) - 1)


def wrap(tokens: list[str], width: int) -> list[str]:
    """Greedy line filling; a token longer than `width` is cut (never exceeds the width)."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        while len(token) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(token[:width])
            token = token[width:]
        if not token:
            continue
        candidate = f"{current} {token}" if current else token
        if len(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = token
    if current:
        lines.append(current)
    return lines


def balanced_wrap(tokens: list[str], width: int, max_lines: int) -> list[str]:
    """Lines no wider than `width`, in at most... as few lines as greedy needs, evened out so the
    last line is not a lone word (narrow the width while the line count stays the same)."""
    lines = wrap(tokens, width)
    best = lines
    for narrower in range(width - 1, max(8, width // 2), -1):
        trial = wrap(tokens, narrower)
        if len(trial) != len(lines):
            break
        best = trial
    return best if len(best) <= max(max_lines, len(lines)) else lines


def build_cues(
    transcript: Transcript, rules: CaptionRules, *, max_chars: int | None = None, max_lines: int | None = None
) -> list[Cue]:
    width = min(rules.max_chars_per_line, max_chars or rules.max_chars_per_line)
    rows = min(rules.max_lines, max_lines or rules.max_lines)
    words = _timed_words(transcript)
    cues: list[Cue] = []
    current: list[Word] = []
    last_speaker: str | None = None

    def label_for(speaker: str | None) -> str:
        return f"{transcript.speaker_display(speaker)}:" if rules.speaker_labels and speaker else ""

    def tokens(ws: list[Word], label: str) -> list[str]:
        return ([label] if label else []) + [w.text for w in ws]

    def flush() -> None:
        nonlocal current, last_speaker
        if not current:
            return
        speaker = current[0].speaker
        label = label_for(speaker) if speaker != last_speaker or not cues else ""
        if rules.speaker_labels and speaker and speaker != last_speaker:
            label = label_for(speaker)
        cues.append(
            Cue(
                start=current[0].start,
                end=current[-1].end,
                lines=balanced_wrap(tokens(current, label), width, rows),
                words=current,
                speaker=speaker,
                label=label,
            )
        )
        last_speaker = speaker
        current = []

    for word in words:
        if current:
            prev = current[-1]
            speaker_change = rules.break_on_speaker_change and word.speaker != prev.speaker
            pause = word.start - prev.end >= PAUSE_SECONDS
            too_long = word.end - current[0].start > rules.max_duration
            label = label_for(current[0].speaker) if current[0].speaker != last_speaker else ""
            too_wide = len(wrap(tokens([*current, word], label), width)) > rows
            sentence_end = prev.text.endswith((".", "?", "!")) and word.end - current[0].start > rules.max_duration / 2
            if speaker_change or pause or too_long or too_wide or sentence_end:
                flush()
        current.append(word)
    flush()
    _time_cues(cues, rules, transcript.duration)
    return cues


def _timed_words(transcript: Transcript) -> list[Word]:
    """Words with times; segments without word times get their words spread evenly by length."""
    out: list[Word] = []
    for seg in transcript.segments:
        if seg.words:
            out.extend(seg.words)
            continue
        parts = seg.text.split()
        total = sum(len(p) for p in parts) or 1
        t = seg.start
        for part in parts:
            span = (seg.end - seg.start) * len(part) / total
            out.append(Word(text=part, start=t, end=t + span, speaker=seg.speaker))
            t += span
    return out


def _time_cues(cues: list[Cue], rules: CaptionRules, duration: float) -> None:
    for i, cue in enumerate(cues):
        limit = cues[i + 1].start - MIN_GAP if i + 1 < len(cues) else max(duration, cue.end)
        wanted = max(cue.end, cue.start + rules.min_duration, cue.start + cue.chars / rules.max_cps)
        cue.end = min(wanted, cue.start + rules.max_duration, max(limit, cue.end))
        if i + 1 < len(cues):
            cue.end = min(cue.end, cues[i + 1].start)  # never overlapping
        cue.end = max(cue.end, cue.start + 0.001)

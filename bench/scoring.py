"""Scoring with kept libraries: WER by jiwer after Whisper's English normaliser (so "1465" and
"fourteen sixty-five" match), DER by pyannote.metrics (collar 0.25 s, overlap scored, UEM honoured).

The collar follows NIST md-eval (and the issue's baseline figures): 0.25 s on each side of a reference
boundary. pyannote.metrics takes the collar's total width, so it is given 0.5 s.

Used by the accuracy bench and by the accuracy tests, so both score the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

COLLAR = 0.25  # seconds on each side of a reference boundary (md-eval's -c 0.25)


@cache
def _normaliser():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalise(text: str) -> str:
    return " ".join(_normaliser()(text).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def word_count(text: str) -> int:
    return len(normalise(text).split())


def load_rttm(path: Path):
    """The reference Annotation of an RTTM file with one recording."""
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=path.stem)
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            annotation[Segment(start, start + duration), len(annotation)] = fields[7]
    return annotation


def load_uem(path: Path):
    from pyannote.core import Segment, Timeline

    regions = [Segment(float(f[2]), float(f[3])) for f in (line.split() for line in path.read_text().splitlines()) if f]
    return Timeline(regions, uri=path.stem)


def annotation(turns: Iterable[tuple[str, float, float]], uri: str = "hyp"):
    """A hypothesis Annotation from (speaker, start, end) turns."""
    from pyannote.core import Annotation, Segment

    out = Annotation(uri=uri)
    for i, (speaker, start, end) in enumerate(turns):
        if end > start:
            out[Segment(start, end), i] = speaker
    return out


def der(reference_rttm: Path, turns: Iterable[tuple[str, float, float]], uem: Path | None = None) -> float:
    """Diarization error rate of `turns` against an RTTM (collar 0.25 s, overlap scored)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = load_rttm(reference_rttm)
    metric = DiarizationErrorRate(collar=2 * COLLAR, skip_overlap=False)
    uem_timeline = load_uem(uem) if uem is not None and uem.exists() else None
    return float(metric(reference, annotation(turns, reference.uri), uem=uem_timeline))


def one_speaker_der(reference_rttm: Path, uem: Path | None = None) -> float:
    """The trivial baseline: all reference speech labelled as one speaker."""
    reference = load_rttm(reference_rttm)
    support = reference.get_timeline().support()
    return der(reference_rttm, [("ONE", s.start, s.end) for s in support], uem)

"""Figures behind the offline diarizer's one-speaker rule (docs/transcriber.md): per fixture, the
two-way split of its partials (centroid cosine, seconds of the smaller half) and the automatic count.

    .venv/bin/python bench/transcriber_speakers.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.diarize import EmbeddingCollector, cluster, spectral_labels, split_evidence
from mediaflow.transcriber.model import get_models
from mediaflow.transcriber.pipeline import transcribe_file

MEDIA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "media"
FILES = ["pyannote_sample.wav", "sonnet001_librivox.mp3", "jfk.flac", "grid_bbaf2n.mp4"]


def main() -> None:
    models = get_models(Settings())
    print("| file | partials | centroid cosine | smaller half (s) | automatic count |")
    print("|---|---|---|---|---|")
    for name in FILES:
        collector = EmbeddingCollector()
        transcribe_file(models, MEDIA / name, TranscribeOptions(diarize=True), sink=collector)
        emb = np.stack(collector.embeddings)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        durations = np.array([end - start for start, end in collector.spans])
        evidence = split_evidence(emb, durations, spectral_labels(np.clip(emb @ emb.T, 0.0, 1.0), 2))
        count = len(np.unique(cluster(emb, durations, None, None, None)))
        print(f"| {name} | {len(emb)} | {evidence.centroid_cosine:.3f} | {evidence.minority_seconds:.1f} | {count} |")


if __name__ == "__main__":
    main()

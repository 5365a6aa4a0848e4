"""The diarization fit set: synthetic conversations cut from long_dev_en.flac, whose segments.tsv
names each clip's speaker (LJSpeech reader, LibriSpeech 1995/2830/4507/8455, the LibriVox
Sense-and-Sensibility reader, CMU ARCTIC aew/axb). Thresholds are fitted here only, never on the
report set (AMI / pyannote_sample).

Each conversation interleaves 2-4 speakers with short gaps and some overlaps (mixed), half of them
with a little reverberation and noise so the voices are less studio-clean; single-speaker files
(joined clips of one reader) must come out as one speaker. RTTM and UEM are written next to each
WAV. Deterministic (fixed seeds), so `build()` gives the same files on every run.

    python -m bench.fitset   # writes bench/results/fitset/*.wav|rttm|uem
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "media" / "long_dev_en.flac"
TSV = SOURCE.with_suffix(".segments.tsv")
OUT = Path(__file__).parent / "results" / "fitset"
SR = 16_000


def speaker_of(source: str) -> str:
    if source.startswith("LJSpeech"):
        return "lj"
    if source.startswith("LibriSpeech"):
        return "ls" + source.split()[2].split("-")[0]
    if source.startswith("LibriVox"):
        return "sense"
    return "arctic_" + source.split()[2]  # CMU ARCTIC aew / axb


def clips() -> dict[str, list[np.ndarray]]:
    from mediaflow.transcriber.audio import windows

    audio = np.concatenate([w.samples for w in windows(SOURCE, 300.0)])
    out: dict[str, list[np.ndarray]] = {}
    with TSV.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            piece = audio[int(float(row["start"]) * SR): int(float(row["end"]) * SR)]
            out.setdefault(speaker_of(row["source"]), []).append(piece)
    return out


def _roomify(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap room: exponentially decaying noise impulse response, then noise at ~20 dB SNR."""
    t = np.arange(int(0.25 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-t / 0.06)
    ir[0] = 8.0
    y = np.convolve(x, ir / np.abs(ir).sum() * 4)[: len(x)]
    y *= np.sqrt((x ** 2).mean() / max((y ** 2).mean(), 1e-12))
    noise = rng.standard_normal(len(y)) * np.sqrt((y ** 2).mean()) * 10 ** (-20 / 20)
    return (y + noise).astype(np.float32)


def conversation(pool: dict[str, list[np.ndarray]], speakers: list[str], seconds: float,
                 rng: np.random.Generator, overlap_rate: float = 0.2):
    """Turns of 2-8 s cut from each speaker's clips, gaps of 0.1-1 s, some turns start early (overlap)."""
    track = np.zeros(int((seconds + 30) * SR), dtype=np.float32)
    ref: list[tuple[str, float, float]] = []
    t = 0.3
    previous = None
    while t < seconds:
        spk = rng.choice([s for s in speakers if s != previous] or speakers)
        clip = pool[spk][rng.integers(len(pool[spk]))]
        length = min(len(clip), int(rng.uniform(2.0, 8.0) * SR))
        begin = rng.integers(0, len(clip) - length + 1)
        piece = clip[begin: begin + length] * rng.uniform(0.5, 1.5)
        start = t
        if previous is not None and rng.random() < overlap_rate:
            start = max(0.0, t - rng.uniform(0.3, 1.0))  # talks over the end of the previous turn
        a = int(start * SR)
        track[a: a + length] += piece
        ref.append((spk, start, start + length / SR))
        t = start + length / SR + rng.uniform(0.1, 1.0)
        previous = spk
    end = max(e for _, _, e in ref) + 0.5
    return track[: int(end * SR)], ref


def _write(name: str, audio: np.ndarray, ref: list[tuple[str, float, float]]) -> Path:
    import soundfile as sf

    OUT.mkdir(parents=True, exist_ok=True)
    wav = OUT / f"{name}.wav"
    sf.write(wav, np.clip(audio, -1, 1), SR, subtype="PCM_16")
    wav.with_suffix(".rttm").write_text("".join(
        f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for spk, s, e in ref))
    wav.with_suffix(".uem").write_text(f"{name} NA 0.000 {len(audio) / SR:.3f}\n")
    return wav


def build() -> list[Path]:
    pool = clips()
    voices = sorted(pool)  # lj, ls1995, ls2830, ls4507, ls8455, sense, arctic_aew, arctic_axb
    files: list[Path] = []
    plans = [  # (speakers, seconds, room)
        (["lj", "sense"], 90, False), (["ls1995", "arctic_aew"], 60, True),
        (["lj", "arctic_axb", "sense"], 90, False), (["sense", "ls1995", "arctic_aew"], 90, True),
        (["lj", "ls1995", "arctic_aew", "arctic_axb"], 120, False),
        (["sense", "lj", "ls2830", "arctic_aew"], 120, True), (["lj", "ls1995"], 45, True),
        (["arctic_aew", "arctic_axb"], 40, False),
    ]
    for i, (speakers, seconds, room) in enumerate(plans):
        assert set(speakers) <= set(voices)
        rng = np.random.default_rng(1000 + i)
        audio, ref = conversation(pool, speakers, seconds, rng)
        if room:
            audio = _roomify(audio, rng)
        files.append(_write(f"conv{i}_{len(speakers)}spk", audio, ref))
    for i, spk in enumerate(["lj", "sense", "arctic_aew"]):  # one voice, several clips joined
        rng = np.random.default_rng(2000 + i)
        audio, ref = conversation({spk: pool[spk]}, [spk], 60 if spk == "lj" else 20, rng, overlap_rate=0.0)
        if i == 1:
            audio = _roomify(audio, rng)
        files.append(_write(f"mono{i}_{spk}", audio, [(spk, s, e) for _, s, e in ref]))
    return files


if __name__ == "__main__":
    for path in build():
        print(path)

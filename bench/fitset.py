"""The diarization fit set: synthetic conversations cut from long_dev_en.flac, whose segments.tsv
names each clip's speaker (LJSpeech reader, LibriSpeech 1995/2830/4507/8455, the LibriVox
Sense-and-Sensibility reader, CMU ARCTIC aew/axb). Thresholds are fitted here only, never on the
report set (AMI / pyannote_sample).

Two parts, both fitted on together:
- `conv*`/`mono*` (studio): each conversation interleaves 2-4 speakers with short gaps and some
  overlaps, half of them with a little reverberation and noise; single-speaker files (joined clips of
  one reader) must come out as one speaker.
- `ff*` (far field, `far_field()`): the read speech made meeting-like, since a threshold fitted on
  studio voices alone did not carry over to a table microphone (it merged speakers who differ mostly
  in content, not channel). One room per file (RT60 0.4-0.9 s) with a different impulse response per
  talker position (direct-to-reverberant ratio -4..+6 dB), one shared microphone colouring, speakers
  at different levels (-9..+3 dB), background noise at 5-20 dB SNR, spontaneous-style turns (many of
  0.4-2 s), backchannels of 0.3-0.8 s spoken over the current turn, and more overlap; 30-90 s long,
  like the excerpts it stands in for. Again with one-speaker files (same room treatment).
RTTM and UEM are written next to each WAV. Deterministic (fixed seeds), so `build()` gives the same
files on every run.

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
            piece = audio[int(float(row["start"]) * SR) : int(float(row["end"]) * SR)]
            out.setdefault(speaker_of(row["source"]), []).append(piece)
    return out


def _roomify(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap room: exponentially decaying noise impulse response, then noise at ~20 dB SNR."""
    t = np.arange(int(0.25 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-t / 0.06)
    ir[0] = 8.0
    y = np.convolve(x, ir / np.abs(ir).sum() * 4)[: len(x)]
    y *= np.sqrt((x**2).mean() / max((y**2).mean(), 1e-12))
    noise = rng.standard_normal(len(y)) * np.sqrt((y**2).mean()) * 10 ** (-20 / 20)
    return (y + noise).astype(np.float32)


def conversation(
    pool: dict[str, list[np.ndarray]],
    speakers: list[str],
    seconds: float,
    rng: np.random.Generator,
    overlap_rate: float = 0.2,
):
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
        piece = clip[begin : begin + length] * rng.uniform(0.5, 1.5)
        start = t
        if previous is not None and rng.random() < overlap_rate:
            start = max(0.0, t - rng.uniform(0.3, 1.0))  # talks over the end of the previous turn
        a = int(start * SR)
        track[a : a + length] += piece
        ref.append((spk, start, start + length / SR))
        t = start + length / SR + rng.uniform(0.1, 1.0)
        previous = spk
    end = max(e for _, _, e in ref) + 0.5
    return track[: int(end * SR)], ref


def _impulse_response(rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Direct path plus a few early reflections and an exponentially decaying diffuse tail, scaled so
    the direct path carries `drr_db` over the rest."""
    n = int(min(1.2, 1.5 * rt60) * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB after rt60
    tail[: int(0.003 * SR)] = 0.0
    for _ in range(6):  # early reflections, 3-30 ms after the direct path
        k = int(rng.uniform(0.003, 0.03) * SR)
        tail[k] += rng.uniform(-0.6, 0.6) * np.abs(tail).max()
    tail *= np.sqrt(10 ** (-drr_db / 10) / max((tail**2).sum(), 1e-12))
    tail[0] = 1.0
    return tail


def _colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A microphone / room colouring shared by every talker of a file: a random band-pass."""
    from scipy.signal import butter, sosfilt

    sos = butter(2, [rng.uniform(80, 250), rng.uniform(4500, 7500)], btype="band", fs=SR, output="sos")
    return sosfilt(sos, x)


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pinkish background (1/f) plus a faint hum, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))
    noise = np.fft.irfft(spectrum, n)
    noise += 0.3 * np.std(noise) * np.sin(2 * np.pi * rng.uniform(50, 120) * np.arange(n) / SR)
    return noise / max(float(np.std(noise)), 1e-12)


def meeting(pool: dict[str, list[np.ndarray]], speakers: list[str], seconds: float, rng: np.random.Generator):
    """Spontaneous-style turn-taking, each talker through their own impulse response of one room, at
    their own level, over background noise. Returns (audio, reference turns)."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.4, 0.9)
    irs = {s: _impulse_response(rt60, rng.uniform(-4.0, 6.0), rng) for s in speakers}
    gains = {s: 10 ** (rng.uniform(-9.0, 3.0) / 20) for s in speakers}
    dry = {s: np.zeros(int((seconds + 10) * SR), dtype=np.float32) for s in speakers}
    ref: list[tuple[str, float, float]] = []

    def place(spk: str, start: float, length: float) -> float:
        clip = pool[spk][rng.integers(len(pool[spk]))]
        n = min(len(clip), int(length * SR))
        begin = rng.integers(0, len(clip) - n + 1)
        piece = clip[begin : begin + n] / max(float(np.sqrt((clip**2).mean())), 1e-6) * 0.05
        a = int(start * SR)
        dry[spk][a : a + n] += piece * gains[spk] * 10 ** (rng.uniform(-2.0, 2.0) / 20)
        ref.append((spk, start, start + n / SR))
        return start + n / SR

    t, previous = 0.3, None
    while t < seconds:
        spk = str(rng.choice([s for s in speakers if s != previous] or speakers))
        length = rng.uniform(0.4, 2.0) if rng.random() < 0.5 else rng.uniform(2.0, 7.0)
        start = t - rng.uniform(0.2, 1.0) if spk != previous and previous and rng.random() < 0.3 else t
        end = place(spk, max(0.0, start), length)
        if len(speakers) > 1 and end - start > 2.0 and rng.random() < 0.4:  # a backchannel over it
            other = str(rng.choice([s for s in speakers if s != spk]))
            place(other, rng.uniform(start + 0.5, end - 0.8), rng.uniform(0.3, 0.8))
        t = end + rng.uniform(0.05, 0.8)
        previous = spk
    total = int((max(e for _, _, e in ref) + 0.5) * SR)
    wet = sum(fftconvolve(dry[s][:total], irs[s])[:total] for s in speakers)
    wet = _colour(wet, rng)
    wet += _noise(total, rng) * np.sqrt((wet**2).mean()) * 10 ** (-rng.uniform(5.0, 20.0) / 20)
    return (wet / max(float(np.abs(wet).max()), 1e-9) * 0.7).astype(np.float32), sorted(ref, key=lambda r: r[1])


def far_field(pool: dict[str, list[np.ndarray]]) -> list[Path]:
    voices = sorted(pool)
    files: list[Path] = []
    for i in range(12):  # 2-4 talkers, 30-90 s
        rng = np.random.default_rng(3000 + i)
        count = [2, 3, 3, 4][i % 4]
        speakers = [str(s) for s in rng.choice(voices, size=count, replace=False)]
        audio, ref = meeting(pool, speakers, [30, 30, 60, 90][i % 4], rng)
        files.append(_write(f"ff{i}_{count}spk", audio, ref))
    for i, spk in enumerate(["lj", "sense", "arctic_aew", "ls1995"]):
        rng = np.random.default_rng(4000 + i)
        audio, ref = meeting(pool, [spk], 30 if i % 2 else 60, rng)
        files.append(_write(f"ffmono{i}_{spk}", audio, ref))
    return files


def _write(name: str, audio: np.ndarray, ref: list[tuple[str, float, float]]) -> Path:
    import soundfile as sf

    OUT.mkdir(parents=True, exist_ok=True)
    wav = OUT / f"{name}.wav"
    sf.write(wav, np.clip(audio, -1, 1), SR, subtype="PCM_16")
    wav.with_suffix(".rttm").write_text(
        "".join(f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for spk, s, e in ref)
    )
    wav.with_suffix(".uem").write_text(f"{name} NA 0.000 {len(audio) / SR:.3f}\n")
    return wav


def build() -> list[Path]:
    pool = clips()
    voices = sorted(pool)  # lj, ls1995, ls2830, ls4507, ls8455, sense, arctic_aew, arctic_axb
    files: list[Path] = []
    plans = [  # (speakers, seconds, room)
        (["lj", "sense"], 90, False),
        (["ls1995", "arctic_aew"], 60, True),
        (["lj", "arctic_axb", "sense"], 90, False),
        (["sense", "ls1995", "arctic_aew"], 90, True),
        (["lj", "ls1995", "arctic_aew", "arctic_axb"], 120, False),
        (["sense", "lj", "ls2830", "arctic_aew"], 120, True),
        (["lj", "ls1995"], 45, True),
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
    return files + far_field(pool)


if __name__ == "__main__":
    for path in build():
        print(path)

"""Speaker identification: how often a diarized speaker gets the right name from the enrolled voices.

The production path end to end except ASR (which does not touch voice prints): the offline diarizer
(segmentation-3.0 + CAM++) finds speakers and their prints, `speakers.match` pairs them with the
enrolled prints at the threshold. Each diarized speaker is scored against the reference speaker it
overlaps most: **correct** (right name), **wrong** (another enrolled name, or a name for a voice
that was never enrolled), **missed** (no name for an enrolled voice), **rejected** (no name for a
voice never enrolled: also right). Accuracy = (correct + rejected) / speakers.

- Fit set (threshold fitted here only): long_dev_en.flac's clips. Four voices with several clips
  (LJSpeech, the Sense-and-Sensibility reader, ARCTIC aew and axb) are enrolled from their first
  clip, as `POST /v1/speakers {"media_id"}` does; the others are never enrolled. Test files are
  synthetic conversations (bench/fitset.py `conversation`) of 2-3 voices cut from the clips the
  enrollment did not use.
- Report set: the AMI excerpts trn00/04/06 and pyannote_sample.wav (Diane, Sheila), each cut in two
  at the middle of its reference speech. Speakers diarized in one half are enrolled under the
  reference name they overlap most (as `POST /v1/speakers {"job_id", "speaker"}` does), all four
  files into one registry (so every other file's voices are impostors); the other halves are
  identified; then the same the other way round. A speaker the diarizer does not find in the
  enrolling half (little speech) is never enrolled: where it is found in the other half, the right
  answer is no name.

    python -m bench.speaker_id          # fit the threshold, then report; bench/results/speaker_id.json
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "fixtures" / "media"
SR = 16_000
REPORT = ["meeting_dev_ami_trn00", "meeting_dev_ami_trn04", "meeting_dev_ami_trn06", "pyannote_sample"]
STM_NAMES = {"pyannote_sample": {"speaker90": "Diane", "speaker91": "Sheila"}}
ENROLLED_FIT = ["lj", "sense", "arctic_aew", "arctic_axb"]
Ref = list[tuple[str, float, float]]


@dataclass
class Trial:
    file: str
    truth: str  # reference speaker
    enrolled: bool  # whether that speaker is in the registry
    name: str | None  # the enrolled name paired with it (before the threshold)
    similarity: float  # of that pairing (-1 when none)
    seconds: float


def diarize(audio: np.ndarray) -> tuple[dict[str, np.ndarray], Ref]:
    from mediaflow.transcriber.diarize import NeuralDiarizer

    diarizer = NeuralDiarizer()
    diarizer.add_window(audio, 0.0, [])
    turns = [(t.speaker, t.start, t.end) for t in diarizer.turns(None, None, None)]
    return diarizer.prints, turns


def to_reference(turns: Ref, ref: Ref) -> dict[str, tuple[str, float, float]]:
    """Each diarized speaker -> (reference speaker it overlaps most, that overlap, its seconds)."""
    out = {}
    for label in {s for s, _, _ in turns}:
        mine = [(a, b) for s, a, b in turns if s == label]
        overlap: dict[str, float] = {}
        for spk, a, b in ref:
            overlap[spk] = overlap.get(spk, 0.0) + sum(max(0.0, min(b, e) - max(a, s)) for s, e in mine)
        best = max(overlap, key=overlap.__getitem__)
        if overlap[best] > 0:
            out[label] = (best, overlap[best], sum(e - s for s, e in mine))
    return out


def identify(file: str, audio: np.ndarray, ref: Ref, registry: dict[str, np.ndarray]) -> list[Trial]:
    from mediaflow.common.jobs.voices import Voice
    from mediaflow.transcriber.speakers import match
    from mediaflow.transcriber.transcript import Voice as Found

    began = time.perf_counter()
    prints, turns = diarize(audio)
    print(f"  {file}: {len(audio) / SR:.0f} s diarized in {time.perf_counter() - began:.1f} s", flush=True)
    mapped = to_reference(turns, ref)
    found = [Found(label=k, seconds=mapped[k][2], embedding=prints[k].tolist()) for k in mapped if k in prints]
    enrolled = [Voice(id=name, name=name, state="ready", embedding=p.tolist()) for name, p in registry.items()]
    match(found, enrolled, threshold=-1.0)  # every pairing, with its similarity: the threshold is applied later
    return [
        Trial(file, mapped[f.label][0], mapped[f.label][0] in registry, f.name, f.similarity or -1.0, f.seconds)
        for f in found
    ]


def score(trials: list[Trial], threshold: float) -> dict[str, float]:
    counts = {"correct": 0, "wrong": 0, "missed": 0, "rejected": 0}
    for t in trials:
        named = t.name is not None and t.similarity >= threshold
        if named:
            counts["correct" if t.name == t.truth else "wrong"] += 1
        else:
            counts["missed" if t.enrolled else "rejected"] += 1
    n = max(1, len(trials))
    return {**counts, "speakers": len(trials), "accuracy": round((counts["correct"] + counts["rejected"]) / n, 3)}


def fit_threshold(trials: list[Trial]) -> float:
    """The middle of the widest best-scoring range of thresholds (over 0.01 steps)."""
    grid = np.round(np.arange(0.2, 0.96, 0.01), 2)
    acc = np.array([score(trials, t)["accuracy"] for t in grid])
    best = np.flatnonzero(acc == acc.max())
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(runs, key=len)
    return float(grid[widest[len(widest) // 2]])


# ---- the sets ---------------------------------------------------------------------------------------
def fit_trials() -> list[Trial]:
    from bench.fitset import clips, conversation
    from mediaflow.transcriber.diarize import NeuralDiarizer
    from mediaflow.transcriber.speakers import main_voice

    pool = clips()
    registry = {}
    for name in ENROLLED_FIT:  # each enrolled from its first clip, the clip path of POST /v1/speakers
        diarizer = NeuralDiarizer()
        diarizer.add_window(pool[name][0], 0.0, [])
        registry[name] = main_voice(diarizer)[0]
    held = {spk: (clips_[1:] if spk in ENROLLED_FIT else clips_) for spk, clips_ in pool.items()}
    rng = np.random.default_rng(14)
    voices = sorted(held)
    trials: list[Trial] = []
    for i in range(10):
        speakers = list(rng.choice(voices, size=2 + i % 2, replace=False))
        audio, ref = conversation({s: held[s] for s in speakers}, speakers, 40.0, rng)
        trials += identify(f"conv{i}", audio, ref, registry)
    return trials


def read_reference(stem: str) -> Ref:
    names = STM_NAMES.get(stem, {})
    ref = []
    for line in (MEDIA / f"{stem}.rttm").read_text().splitlines():
        f = line.split()
        ref.append((names.get(f[7], f"{stem}:{f[7]}"), float(f[3]), float(f[3]) + float(f[4])))
    return ref


def half_point(ref: Ref) -> float:
    """The time that halves the reference speech."""
    total = sum(e - s for _, s, e in ref)
    for t in np.arange(0.0, max(e for _, _, e in ref), 0.1):
        if sum(max(0.0, min(e, t) - s) for _, s, e in ref) >= total / 2:
            return float(t)
    return 0.0


def report_trials() -> tuple[list[Trial], dict[str, float]]:
    """Both ways: enroll in the first halves and identify in the second ones, then the reverse."""
    from mediaflow.transcriber.audio import windows

    halves, cuts = {}, {}
    for stem in REPORT:
        audio = np.concatenate([w.samples for w in windows(MEDIA / f"{stem}.wav", 300.0)])
        ref = read_reference(stem)
        cut = cuts[stem] = round(half_point(ref), 1)
        first = [(s, a, min(b, cut)) for s, a, b in ref if a < cut]
        second = [(s, max(a, cut) - cut, b - cut) for s, a, b in ref if b > cut]
        halves[stem] = ((audio[: int(cut * SR)], first), (audio[int(cut * SR) :], second))
    trials = []
    for enroll_half, test_half, way in ((0, 1, "1st->2nd"), (1, 0, "2nd->1st")):
        registry: dict[str, np.ndarray] = {}
        for stem in REPORT:
            audio, ref = halves[stem][enroll_half]
            prints, turns = diarize(audio)
            best: dict[str, tuple[float, np.ndarray]] = {}
            for label, (truth, overlap, _seconds) in to_reference(turns, ref).items():
                if label in prints and overlap > best.get(truth, (0.0, None))[0]:
                    best[truth] = (overlap, prints[label])
            registry.update({truth: p for truth, (_o, p) in best.items()})
        for stem in REPORT:
            audio, ref = halves[stem][test_half]
            trials += identify(f"{stem} {way}", audio, ref, registry)
    return trials, cuts


def main() -> None:
    from bench._common import write_result

    fit = fit_trials()
    threshold = fit_threshold(fit)
    report, cuts = report_trials()
    result = {
        "threshold": threshold,
        "fit": score(fit, threshold),
        "report": score(report, threshold),
        "report_per_file": {stem: score([t for t in report if t.file.startswith(stem)], threshold) for stem in REPORT},
        "cuts_seconds": cuts,
        "report_trials": [
            {**t.__dict__, "similarity": round(t.similarity, 3), "seconds": round(t.seconds, 2)} for t in report
        ],
        "fit_trials": [
            {**t.__dict__, "similarity": round(t.similarity, 3), "seconds": round(t.seconds, 2)} for t in fit
        ],
    }
    path = write_result("speaker_id", result)
    print(f"threshold {threshold} (fitted on {len(fit)} speakers)")
    print("fit   ", result["fit"])
    print("report", result["report"])
    for stem, s in result["report_per_file"].items():
        print(f"  {stem:24s}", s)
    for t in report:
        enrolled = "enrolled" if t.enrolled else "unknown"
        print(f"  {t.file:33s} {t.truth:34s} {enrolled:8s} best={t.name} sim={t.similarity:.3f} {t.seconds:.1f}s")
    print(path)


if __name__ == "__main__":
    main()

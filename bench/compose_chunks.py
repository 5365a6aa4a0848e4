"""Chunked renders of a long timeline: `MEDIAFLOW_COMPOSE_PARALLEL_CHUNKS` 1 vs 2 (and more).

Timeline: `--items` items (default 48, i.e. 4 chunks of 12) of `--item-seconds` (1 s) cut in turn from
the mixed clips of bench/compose.py (320x240 flagged 16:9 with 5.1 audio, 360x288, 1080p, mono 720p,
silent 480p, portrait, 1440p, scope), no logo/captions (so the chunks are joined by the concat
demuxer: video stream copy, AAC once). Each run is its own subprocess; peak RSS is sampled every 50 ms
as the SUM over all ffmpeg processes alive at that moment (two chunks in parallel = two encoders).

    .venv/bin/python -m bench.compose_chunks                       # 1080p standard, 2 runs each
    .venv/bin/python -m bench.compose_chunks --parallel 1 2 3 --runs 1 --resolution 1280x720 --quality draft
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timeline(inputs: dict[str, Any], items: int, seconds: float, resolution: str, quality: str) -> dict[str, Any]:
    clips = inputs["clips"]
    entries = []
    for k in range(items):
        path, start, _end = clips[k % len(clips)]  # every clip lasts at least 2 s
        entries.append({"kind": "video", "path": path, "trim": {"start": start, "end": round(start + seconds, 3)}})
    return {"output": {"resolution": resolution, "fps": 30, "quality": quality, "encoder": "x264"}, "items": entries}


def _sample_ffmpeg_rss(stop: threading.Event, peaks: dict[str, int]) -> None:
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        total = 0
        for child in me.children(recursive=True):
            try:
                if child.name() == "ffmpeg":
                    rss = child.memory_info().rss
                    total += rss
                    peaks["single"] = max(peaks["single"], rss)
            except psutil.Error:
                continue
        peaks["sum"] = max(peaks["sum"], total)
        time.sleep(0.05)


def _child(timeline_json: str, parallel: int, out: str) -> None:
    from mediaflow.common.options.compose import ComposeOptions
    from mediaflow.common.settings import Settings
    from mediaflow.compositor.config import CompositorConfig
    from mediaflow.compositor.encoders import output_args
    from mediaflow.compositor.plan import MediaResolver, build_plan
    from mediaflow.compositor.render import RenderRequest, render

    opts = ComposeOptions.model_validate(json.loads(Path(timeline_json).read_text()))
    config = CompositorConfig(parallel_chunks=parallel)
    stop, peaks = threading.Event(), {"sum": 0, "single": 0}
    sampler = threading.Thread(target=_sample_ffmpeg_rss, args=(stop, peaks), daemon=True)

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="mediaflow_bench_") as tmp:
            work = Path(tmp)
            plan = await build_plan(
                opts,
                MediaResolver(
                    None,
                    None,
                    Settings(allowed_roots=[Path("/")]),
                    work,  # type: ignore[arg-type]
                    "bench",
                ),
                config,
            )
            req = RenderRequest(
                plan, Path(out), work, output_args("libx264", plan.height, opts.output.quality, plan.fps), config
            )
            return await render(req)

    sampler.start()
    t0 = time.perf_counter()
    info = asyncio.run(go())
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "peak_rss_sum_mib": round(peaks["sum"] / 2**20, 1),
                "peak_rss_one_ffmpeg_mib": round(peaks["single"] / 2**20, 1),
                **info,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--item-seconds", type=float, default=1.0)
    parser.add_argument("--resolution", default="1920x1080")
    parser.add_argument("--quality", default="standard")
    parser.add_argument("--child", nargs=3, metavar=("TIMELINE", "PARALLEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return
    from bench._common import write_result
    from bench.compose import make_inputs

    runs: dict[int, list[dict[str, Any]]] = {p: [] for p in args.parallel}
    with tempfile.TemporaryDirectory(prefix="mediaflow_bench_") as tmp:
        d = Path(tmp)
        spec = timeline(make_inputs(d), args.items, args.item_seconds, args.resolution, args.quality)
        timeline_json = d / "timeline.json"
        timeline_json.write_text(json.dumps(spec))
        for i in range(args.runs):
            for p in args.parallel if i % 2 == 0 else list(reversed(args.parallel)):  # interleaved
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.compose_chunks",
                        "--child",
                        str(timeline_json),
                        str(p),
                        str(d / f"out-{p}.mp4"),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[p].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"parallel_chunks={p}", runs[p][-1], flush=True)
    base = statistics.median(r["seconds"] for r in runs[args.parallel[0]])
    summary = {
        str(p): {
            "median_seconds": round(statistics.median(r["seconds"] for r in rs), 2),
            "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in rs), 2),
            "peak_rss_sum_mib": max(r["peak_rss_sum_mib"] for r in rs),
            "peak_rss_one_ffmpeg_mib": max(r["peak_rss_one_ffmpeg_mib"] for r in rs),
            "wall_ratio_vs_first": round(statistics.median(r["seconds"] for r in rs) / base, 3),
        }
        for p, rs in runs.items()
    }
    result = {
        "timeline": {
            "items": args.items,
            "item_seconds": args.item_seconds,
            "output": f"{args.resolution}@30",
            "quality": args.quality,
            "chunk_items": 12,
        },
        "runs": {str(p): r for p, r in runs.items()},
        "summary": summary,
    }
    path = write_result(f"compose_chunks-{args.resolution}-{args.quality}", result)
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()

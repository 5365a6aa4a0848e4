"""The web page in a real headless Chromium: set the key, upload a real file, start a probe job, watch
it finish over SSE, see it in the job list and download its artifact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from gateway_support import running_compositor, running_gateway

from mediaflow.common.jobs.keys import TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.compositor import jobs as compositor_jobs
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber.model import get_models

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def probe_with_report(ctx: JobContext) -> dict:
    """The real probe job, which also leaves its answer as an artifact to download."""
    info = await compositor_jobs.probe(ctx)
    await ctx.write_artifact("probe.json", json.dumps(info).encode(), "application/json")
    return info


async def start_job(page, path: Path, job_type: str) -> None:
    """Sign in with Alice's key, pick a file and a job type, and submit, as a user would."""
    await page.fill("#api-key", "key-alice")
    await page.click("#save-key")
    await page.set_input_files("#file", str(path))
    await page.select_option("#job-type", job_type)
    await page.click("#submit")


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run scripts/system-deps.sh test")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_upload_and_follow_a_job_in_the_browser(redis, settings, media, browser, tmp_path):
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context = await browser.new_context(accept_downloads=True)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(base + "/")
        assert await page.title() == "mediaflow"

        await start_job(page, media / "jfk.flac", "probe")

        # progress and state arrive over the SSE stream until the job succeeds
        await page.wait_for_selector('#current[data-state="succeeded"]', timeout=30_000)
        assert await page.eval_on_selector("#progress", "p => p.value") == 1
        log = await page.inner_text("#log")
        assert "uploaded jfk.flac: 11.0 s" in log and "state: running" in log and "state: succeeded" in log
        job_id = await page.inner_text("#current-id")

        # the job list shows it finished, with its artifact
        row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
        await row.locator("td.state-succeeded").wait_for(timeout=10_000)
        async with page.expect_download() as download_info:
            await row.locator("a.artifact", has_text="probe.json").click()
        download = await download_info.value
        target = tmp_path / "probe.json"
        await download.save_as(target)
        assert json.loads(target.read_text())["duration"] == 11.0

        # a wrong key shows the problem's code instead of failing silently
        await page.fill("#api-key", "wrong")
        await page.click("#save-key")
        await page.wait_for_function("document.querySelector('#error').textContent.includes('unauthorized')")
        assert errors == []
        await context.close()


async def test_transcribe_job_shows_speech_coverage(redis, settings, media, browser):
    """A real transcribe job (real model, in-process worker): the page shows how much speech the words cover."""
    get_models(settings)  # loaded before the worker starts, as the worker's startup does
    worker = create_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: transcriber_jobs.transcribe},
        settings,
        workflows=WORKFLOWS,
        handle_signals=False,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        async with running_gateway(settings) as base:
            page = await browser.new_page()
            await page.goto(base + "/")
            await start_job(page, media / "jfk.flac", "transcribe")
            await page.wait_for_selector('#current[data-state="succeeded"]', timeout=120_000)
            await page.wait_for_selector("#metrics:not([hidden])", timeout=10_000)
            text = await page.inner_text("#metrics")
            speech, covered = (float(x) for x in re.findall(r"([0-9.]+) s", text)[:2])
            assert 8 < speech <= 11.5 and covered >= 0.9 * speech, text
            assert "windows decoded again 0" in text
            await page.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await worker.close()

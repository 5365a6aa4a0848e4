"""The operator console (services/api/.../web) in a real headless Chromium, against the real gateway and
in-process workers: sign-in, multi-file upload with progress and a batch, the jobs list (filters,
paging, cancel/retry/delete), the job page (stages, artifacts, errors), the player with captions and
the transcript, and the queues view. Screenshots land in docs/console/ (docs/console.md shows them)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_support import running_compositor, running_gateway
from job_support import in_process_worker
from test_webpage import browser, probe_with_report  # noqa: F401  (browser is a fixture)

from mediaflow.common.jobs.keys import TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.settings import Settings
from mediaflow.compositor import jobs as compositor_jobs
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber.model import get_models

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
KEY = "key-alice"


async def screenshot(page, name: str, **kwargs) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), **kwargs)


async def open_console(chromium, base: str, **context_args):
    context = await chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860}, **context_args)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(base + "/")
    return context, page, errors


async def sign_in(page, key: str = KEY) -> None:
    await page.fill("#api-key", key)
    await page.click("#save-key")
    await page.wait_for_function("document.querySelector('#key-state').textContent === 'signed in'")


async def upload_one(page, path: Path, job_type: str) -> str:
    """Upload one file on the Upload view and start a job; the job's id."""
    await page.goto(page.url.split("#")[0] + "#/upload")
    await page.set_input_files("#file", str(path))
    await page.select_option("#job-type", job_type)
    await page.click("#submit")
    await page.wait_for_function("document.querySelector('#current-id').textContent.startsWith('j_')")
    return await page.inner_text("#current-id")


async def api_call(page, method: str, path: str, body: dict | None = None) -> dict:
    """Call the API from the page with the signed-in key (as the console does)."""
    return await page.evaluate(
        """async ([method, path, body]) => {
            const r = await fetch(path, {method, headers: {
                Authorization: 'Bearer ' + sessionStorage.getItem('mediaflow.apiKey'),
                'Content-Type': 'application/json'}, body: body ? JSON.stringify(body) : undefined});
            return {status: r.status, body: r.status === 204 ? null : await r.json()};
        }""",
        [method, path, body],
    )


def transcriber(settings: Settings) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    get_models(settings)  # loaded before the worker starts, as the worker's startup does
    return in_process_worker(settings, {JobType.transcribe: transcriber_jobs.transcribe}, TRANSCRIBE_QUEUE)


async def test_sign_in_keeps_the_key_out_of_urls_and_storage(redis, settings, browser):  # noqa: F811
    async with running_gateway(settings) as base:
        context, page, errors = await open_console(browser, base)
        requests = []
        page.on("request", lambda r: requests.append(r))
        await sign_in(page)
        assert await page.evaluate("sessionStorage.getItem('mediaflow.apiKey')") == KEY
        assert await page.evaluate("localStorage.getItem('mediaflow.apiKey')") is None
        assert await page.input_value("#api-key") == ""  # not left in the field either
        for view in ("#/jobs", "#/queues", "#/upload"):
            await page.goto(base + "/" + view)
            await page.wait_for_load_state("networkidle")
        await page.reload()  # the key survives a reload of the tab (sessionStorage), not a new tab
        await page.wait_for_function("document.querySelector('#key-state').textContent === 'signed in'")
        await page.wait_for_load_state("networkidle")
        api_requests = [r for r in requests if "/v1/" in r.url]
        assert api_requests
        for r in requests:
            assert KEY not in r.url and "access_token" not in r.url, r.url
        for r in api_requests:
            assert (await r.all_headers()).get("authorization") == f"Bearer {KEY}", r.url
        assert KEY not in page.url

        other = await context.new_page()  # another tab has no key: sessionStorage is per tab
        await other.goto(base + "/#/jobs")
        assert await other.inner_text("#key-state") == "not signed in"
        await other.close()

        await page.click("#sign-out")
        assert await page.evaluate("sessionStorage.getItem('mediaflow.apiKey')") is None
        assert await page.inner_text("#key-state") == "not signed in"
        assert errors == []
        await context.close()


async def test_multi_file_upload_with_progress_and_a_batch(redis, settings, media, browser, tmp_path):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    bogus = tmp_path / "notes.flac"
    bogus.write_text("this is not audio\n" * 100)
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await page.set_input_files("#file", [str(media / "jfk.flac"), str(media / "jfk_talk.mp4"), str(bogus)])
        assert await page.locator("#files li.file").count() == 3
        await page.select_option("#job-type", "probe")
        await page.click("#submit")
        await page.wait_for_selector("#batch:not([hidden])", timeout=30_000)
        assert await page.inner_text("#batch-summary") == "2 accepted, 0 rejected, 1 failed to upload"
        ids = []
        for name in ("jfk.flac", "jfk_talk.mp4"):
            item = page.locator(f'#files li[data-name="{name}"]')
            assert await item.get_attribute("data-state") == "accepted"
            assert await item.locator("progress").evaluate("p => p.value") == 1
            assert int(await item.get_attribute("data-progress-events")) >= 1  # XMLHttpRequest upload progress
            ids.append(await item.locator("a.job-link").inner_text())
        failed = page.locator('#files li[data-name="notes.flac"]')
        assert await failed.get_attribute("data-state") == "failed"
        assert "unsupported_media" in await failed.inner_text()
        # both jobs finish; the recent list shows them with their artifacts
        for job_id in ids:
            await page.locator(f'#jobs tr[data-job-id="{job_id}"] td.state-succeeded').wait_for(timeout=30_000)
        await screenshot(page, "upload.png", full_page=True)

        # the jobs list, one per page: the cursor pages through both
        await page.goto(base + "/#/jobs?type=probe&limit=1")
        rows = page.locator("#job-list tbody tr")
        await rows.first.wait_for()
        assert await rows.count() == 1
        first = await rows.first.get_attribute("data-job-id")
        await page.click("#page-next")
        await page.wait_for_function(f"document.querySelector('#job-list tbody tr').dataset.jobId !== '{first}'")
        second = await rows.first.get_attribute("data-job-id")
        assert {first, second} == set(ids)
        assert await page.inner_text("#page-info") == "page 2"
        await page.click("#page-first")
        await page.wait_for_function(f"document.querySelector('#job-list tbody tr').dataset.jobId === '{first}'")
        assert errors == []
        await context.close()


async def test_jobs_list_filter_cancel_retry_delete(redis, settings, media, browser, tmp_path):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    hold = tmp_path / "hold-30s.flac"
    shutil.copy(media / "jfk.flac", hold)
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: compositor_jobs.probe}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        job_id = await upload_one(page, hold, "probe")
        await page.goto(base + "/#/jobs?state=running")
        row = page.locator(f'#job-list tr[data-job-id="{job_id}"]')
        await row.and_(page.locator('[data-state="running"]')).wait_for(timeout=20_000)
        # live progress and stage while it holds (the list polls running jobs)
        await row.locator(".stage", has_text="hold").wait_for(timeout=10_000)
        before = await row.locator("progress").evaluate("p => p.value")
        await page.wait_for_function(
            f"document.querySelector('#job-list tr[data-job-id=\"{job_id}\"] progress').value > {before}",
            timeout=10_000,
        )
        await screenshot(page, "jobs.png")

        # the type filter: no transcribe job runs
        await page.select_option("#filter-type", "transcribe")
        await page.wait_for_selector("#jobs-empty:not([hidden])")
        assert "type=transcribe" in page.url
        await page.select_option("#filter-state", "")
        await page.select_option("#filter-type", "probe")
        await row.wait_for()

        # cancel the running job, with the keyboard
        await row.locator("button.cancel").focus()
        await page.keyboard.press("Enter")
        await row.and_(page.locator('[data-state="cancelled"]')).wait_for(timeout=15_000)
        # retry brings it back
        await row.locator("button.retry").click()
        await row.and_(page.locator('[data-state="queued"], [data-state="running"]')).wait_for(timeout=10_000)
        assert (await api_call(page, "GET", f"v1/jobs/{job_id}"))["body"]["attempt"] >= 1
        # delete (two steps: the first click arms the button)
        await row.locator("button.delete").click()
        await row.locator("button.delete", has_text="Confirm delete").click()
        await row.wait_for(state="detached", timeout=15_000)
        assert (await api_call(page, "GET", f"v1/jobs/{job_id}"))["status"] == 404
        assert errors == []

        # readable on a phone: the table turns into cards
        phone = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        p2 = await phone.new_page()
        await p2.goto(base + "/")
        await sign_in(p2)
        await p2.goto(base + "/#/jobs")
        await p2.wait_for_selector("#jobs-empty:not([hidden]), #job-list tbody tr")
        assert await p2.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        await phone.close()
        await context.close()


async def test_job_page_shows_stages_artifacts_and_errors(redis, settings, media, browser, tmp_path):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        job_id = await upload_one(page, media / "jfk.flac", "probe")
        await page.wait_for_selector('#current[data-state="succeeded"]', timeout=30_000)
        await page.click("#current-link")
        assert page.url.endswith(f"#/jobs/{job_id}")
        await page.wait_for_selector("#job-state.state-succeeded")
        labels = await page.locator("#timeline li").evaluate_all("lis => lis.map(li => li.dataset.label)")
        assert labels[0] == "queued" and labels[-1] == "succeeded", labels
        assert any(label.startswith("running") for label in labels), labels
        durations = await page.locator("#timeline li .duration").all_inner_texts()
        assert all(d.endswith(" s") for d in durations[:-1]), durations
        async with page.expect_download() as info:
            await page.locator("#artifacts a.artifact", has_text="probe.json").click()
        target = tmp_path / "probe.json"
        await (await info.value).save_as(target)
        assert json.loads(target.read_text())["duration"] == 11.0
        await screenshot(page, "job.png", full_page=True)

        # a job that fails shows its error code and message
        created = await api_call(page, "POST", "v1/jobs", {"type": "probe", "input": {"path": str(media / "jfk.txt")}})
        assert created["status"] == 202, created
        failed_id = created["body"]["id"]
        await page.goto(base + f"/#/jobs/{failed_id}")
        await page.wait_for_selector("#job-state.state-failed", timeout=30_000)
        await page.wait_for_selector("#job-error:not([hidden]) .error-code")
        assert (await page.inner_text("#job-error .error-code")).strip()
        assert await page.locator("#job-actions button.retry").count() == 1
        assert errors == []
        await context.close()


async def test_player_captions_and_transcript(redis, settings, media, browser):  # noqa: F811
    """A real transcribe job: the job page plays the upload with its WebVTT captions and a transcript that
    follows playback, seeks on click and can be searched."""
    async with transcriber(settings), running_gateway(settings) as base:
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        job_id = await upload_one(page, media / "jfk.flac", "transcribe")
        await page.wait_for_selector('#current[data-state="succeeded"]', timeout=120_000)
        await page.click("#current-link")
        await page.wait_for_selector("video#player", timeout=15_000)
        assert page.url.endswith(job_id)
        await page.evaluate("document.querySelector('video#player').textTracks[0].mode = 'showing'")
        await page.wait_for_function(
            "(() => { const t = document.querySelector('video#player').textTracks[0];"
            " return t.cues && t.cues.length > 0; })()",
            timeout=15_000,
        )
        await page.wait_for_function("document.querySelector('video#player').readyState >= 1", timeout=15_000)

        words = page.locator("#transcript .word")
        assert await words.count() > 15
        country = words.filter(has_text="country").first
        start = float(await country.get_attribute("data-start"))
        await country.click()
        await page.wait_for_function(
            f"Math.abs(document.querySelector('video#player').currentTime - {start}) < 0.05", timeout=5_000
        )
        await page.wait_for_selector("#transcript .word.current")
        assert "country" in await page.inner_text("#transcript .word.current")
        assert await page.locator("#transcript .segment.current").count() == 1

        await page.fill("#transcript-search", "country")
        assert await page.inner_text("#search-count") == "2 matches"
        assert await page.locator("#transcript .word.match").count() == 2
        await screenshot(page, "player.png", full_page=True)
        await page.fill("#transcript-search", "zebra")
        assert await page.inner_text("#search-count") == "0 matches"
        assert await page.locator("#transcript .segment:not([hidden])").count() == 0
        await page.fill("#transcript-search", "")
        assert await page.locator("#transcript .segment[hidden]").count() == 0

        # after a reload this tab no longer holds the file: the player streams the upload from the server
        await page.reload()
        await page.wait_for_selector("video#player", timeout=15_000)
        await page.wait_for_function("document.querySelector('video#player').readyState >= 1", timeout=15_000)
        assert "playing the upload jfk.flac" in await page.inner_text("#media-note")
        names = await page.locator("#artifacts a.artifact").all_inner_texts()
        assert "captions.vtt" in names and "transcript.json" in names
        assert errors == []
        await context.close()


async def test_queues_view_lists_live_workers_and_a_degraded_status(redis, settings, media, browser):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1", "stall_seconds": 1.0})
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await page.goto(base + "/#/queues")
        worker = page.locator("#worker-table tbody tr", has_text=str(os.getpid())).first
        await worker.wait_for(timeout=15_000)
        cells = await worker.locator("td").all_inner_texts()
        assert cells[1] == str(os.getpid()) and "compose" in cells[2]
        assert cells[7].endswith("s ago")
        await page.wait_for_selector('#queue-table tr[data-queue$="compose"]')
        assert "ok" in await page.inner_text("#service-status")
        assert await page.locator("#status-banner").is_hidden()
        await screenshot(page, "queues.png", full_page=True)

        # a transcribe job with no transcriber: the queue stalls and the banner says so
        created = await api_call(
            page, "POST", "v1/jobs", {"type": "transcribe", "input": {"path": str(media / "jfk.flac")}}
        )
        assert created["status"] == 202, created
        await page.wait_for_selector("#status-banner:not([hidden])", timeout=20_000)
        assert "queue_stalled" in await page.inner_text("#status-banner")
        await page.locator('#queue-table tr[data-queue$="transcribe"] td').first.wait_for()
        await screenshot(page, "queues-degraded.png", full_page=True)
        assert errors == []
        await context.close()

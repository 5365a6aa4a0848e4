"""The operator console (services/api/.../web) in a real headless Chromium, against the real gateway and
in-process workers: sign-in, multi-file upload with progress and a batch, the jobs list (filters,
paging, cancel/retry/delete), the job page (stages, artifacts, errors), the player with captions and
the transcript, and the queues view. Screenshots land in docs/console/ (docs/console.md shows them)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compositor_helpers import GRID, make_image, make_pattern
from gateway_support import running_compositor, running_gateway
from job_support import in_process_worker
from test_webpage import browser, probe_with_report  # noqa: F401  (browser is a fixture)

from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.keys import stats as stats_key
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.settings import Settings
from mediaflow.compositor import jobs as compositor_jobs
from mediaflow.compositor.main import HANDLERS as COMPOSITOR_HANDLERS
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber import speakers as transcriber_speakers
from mediaflow.transcriber.diarize import diarization_models
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


async def upload_media(page, path: Path) -> str:
    """POST /v1/media from the page with the signed-in key; the media id."""
    return await page.evaluate(
        """async ([name, data]) => {
            const form = new FormData();
            form.append('file', new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], name));
            const r = await fetch('v1/media', {method: 'POST', body: form, headers: {
                Authorization: 'Bearer ' + sessionStorage.getItem('mediaflow.apiKey')}});
            return (await r.json()).id;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )


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


async def wait_ended(page, job_id: str, timeout: float = 30.0) -> dict:
    """Poll the job (from the page, with its key) until it succeeded or failed; the job."""
    deadline = time.monotonic() + timeout
    while (job := (await api_call(page, "GET", f"v1/jobs/{job_id}"))["body"])["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)
    return job


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


async def drop_files(page, selector: str, paths: list[Path]) -> None:
    """Drag files onto `selector` as a user would: dragover then drop, with a DataTransfer holding them."""
    files = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    transfer = await page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name));
            }
            return dt;
        }""",
        files,
    )
    await page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    assert "over" in await page.get_attribute(selector, "class")  # the zone shows it will take them
    await page.dispatch_event(selector, "drop", {"dataTransfer": transfer})
    assert "over" not in await page.get_attribute(selector, "class")


async def test_multi_file_drop_with_progress_and_a_batch(redis, settings, media, browser, tmp_path):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    bogus = tmp_path / "notes.flac"
    bogus.write_text("this is not audio\n" * 100)
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await drop_files(page, "#drop-zone", [media / "jfk.flac", media / "jfk_talk.mp4", bogus])
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

        # the batch resource: one row per item, linked to its job, and the batch ends succeeded
        batch_id = await page.inner_text("#batch-link")
        assert batch_id.startswith("b_")
        await page.click("#batch-link")
        await page.wait_for_selector('#view-batch[data-state="succeeded"]', timeout=15_000)
        assert await page.locator("#batch-items tbody tr a.job-link").all_inner_texts() == ids
        assert (await page.inner_text("#batch-counts")).startswith("2 succeeded (2 items, probe; created ")
        assert await page.locator("#batch-progress").evaluate("p => p.value") == 1
        assert await page.locator("#batch-cancel").is_disabled()
        batch = (await api_call(page, "GET", f"v1/batches/{batch_id}"))["body"]
        assert [i["job_id"] for i in batch["items"]] == ids and batch["template"]["type"] == "probe"

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


async def test_batch_page_follows_cancels_and_retries(redis, settings, media, browser, tmp_path):  # noqa: F811
    """#/batches/<id>: live total progress, counts and item rows; Cancel batch stops the item still
    running, Retry failed runs it again, Delete removes the batch and its jobs."""
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    hold = tmp_path / "hold-6s.flac"
    shutil.copy(media / "jfk.flac", hold)
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: compositor_jobs.probe}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await drop_files(page, "#drop-zone", [media / "jfk_talk.mp4", hold])
        await page.select_option("#job-type", "probe")
        await page.click("#submit")
        await page.wait_for_selector("#batch:not([hidden])", timeout=30_000)
        await page.click("#batch-link")
        rows = page.locator("#batch-items tbody tr")
        held = rows.and_(page.locator('[data-index="1"]'))
        await held.and_(page.locator('[data-state="running"]')).wait_for(timeout=15_000)
        await rows.and_(page.locator('[data-index="0"][data-state="succeeded"]')).wait_for(timeout=15_000)
        # progress of the held item moves on the stream, and the batch's total with it
        await held.locator(".stage", has_text="hold").wait_for(timeout=10_000)
        total = await page.locator("#batch-progress").evaluate("p => p.value")
        await page.wait_for_function(f"document.querySelector('#batch-progress').value > {total}", timeout=10_000)
        assert 0.5 < await page.locator("#batch-progress").evaluate("p => p.value") < 1
        assert (await page.inner_text("#batch-counts")).startswith("1 running, 1 succeeded")
        assert await page.locator("#batch-retry").is_disabled()
        assert "null" not in await page.inner_text("#batch-items")
        await screenshot(page, "batch.png", full_page=True)

        await page.click("#batch-cancel")
        await held.and_(page.locator('[data-state="cancelled"]')).wait_for(timeout=15_000)
        await page.wait_for_selector('#view-batch[data-state="partial"]', timeout=10_000)
        await page.click("#batch-retry")
        await held.and_(page.locator('[data-state="queued"], [data-state="running"]')).wait_for(timeout=10_000)
        await page.wait_for_selector('#view-batch[data-state="succeeded"]', timeout=20_000)
        assert await page.inner_text("#batch-state") == "succeeded"
        job_id = await held.locator("a.job-link").inner_text()
        assert (await api_call(page, "GET", f"v1/jobs/{job_id}"))["body"]["attempt"] == 2

        batch_id = await page.inner_text("#batch-id")
        await page.click("#batch-delete")
        await page.click("#batch-delete")  # the second click confirms
        await page.wait_for_url("**/#/batches")
        await page.wait_for_selector("#batch-list:not([hidden])")
        assert await page.locator(f'#batch-table tr[data-batch-id="{batch_id}"]').count() == 0
        assert (await api_call(page, "GET", f"v1/batches/{batch_id}"))["status"] == 404
        assert (await api_call(page, "GET", f"v1/jobs/{job_id}"))["status"] == 404
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
        # the ETA, from the progress rate: a 30 s hold has well under a minute left, and it shrinks
        eta = row.locator("td.eta")
        await page.wait_for_function(
            f"/^~\\d+ s$/.test(document.querySelector('#job-list tr[data-job-id=\"{job_id}\"] td.eta').textContent)",
            timeout=10_000,
        )
        first_eta = int((await eta.inner_text())[1:-2])
        assert 1 <= first_eta <= 40, first_eta
        await page.wait_for_function(
            f"parseInt(document.querySelector('#job-list tr[data-job-id=\"{job_id}\"] td.eta').textContent.slice(1))"
            f" < {first_eta}",
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


async def test_caption_job_page_plays_the_output_video_with_its_captions(redis, settings, browser):  # noqa: F811
    """A real caption job (transcribe, then compose): the parent's page plays its output.mp4 with the
    WebVTT captions as a track (off by default: they are burned into the picture) and links both steps."""
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with (
        transcriber(cfg),
        running_compositor(cfg, COMPOSITOR_HANDLERS),
        running_gateway(cfg) as base,
    ):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        body = {
            "type": "caption",
            "input": {"path": str(GRID)},
            "options": {"transcribe": {"language": "en"}, "output": {"resolution": "1280x720", "quality": "draft"}},
        }
        created = await api_call(page, "POST", "v1/jobs", body)
        assert created["status"] == 202, created
        job_id = created["body"]["id"]
        await page.goto(f"{base}/#/jobs/{job_id}")
        await page.wait_for_selector("#job-state.state-succeeded", timeout=60_000)
        await page.wait_for_selector("video#player", timeout=15_000)
        assert "playing the artifact output.mp4 (captions burned in" in await page.inner_text("#media-note")
        assert await page.locator("#player track").get_attribute("label") == "captions"
        await page.evaluate("document.querySelector('video#player').textTracks[0].mode = 'showing'")  # the CC button
        await page.wait_for_function(
            "(() => { const t = document.querySelector('video#player').textTracks[0];"
            " return t.cues && t.cues.length > 0; })()",
            timeout=15_000,
        )
        await page.wait_for_function("document.querySelector('video#player').readyState >= 1", timeout=15_000)
        size = await page.evaluate(
            "(() => { const v = document.querySelector('video#player'); return [v.videoWidth, v.videoHeight]; })()"
        )
        assert size == [1280, 720]  # the composed output, not the 360×288 upload
        steps = await page.locator("#job-summary dd a[href^='#/jobs/j_']").all_inner_texts()
        job = (await api_call(page, "GET", f"v1/jobs/{job_id}"))["body"]
        assert steps == job["children"] and len(steps) == 2
        names = await page.locator("#artifacts a.artifact").all_inner_texts()
        assert {"output.mp4", "captions.vtt"} <= set(names)
        assert errors == []
        await context.close()


async def test_speaker_names_rename_enroll_and_the_speakers_view(redis, settings, media, browser):  # noqa: F811
    """A diarized transcribe job (pyannote_sample.wav: two people on the phone): the transcript shows
    two speakers in two colours; the job page's Speakers panel renames SPEAKER_00 to Diane, enrolling
    her voice, follows the relabel job and then shows the name in the transcript and a caption cue;
    an API problem shows next to the form; #/speakers lists the voice and deletes it."""
    handlers = {
        JobType.transcribe: transcriber_jobs.transcribe,
        JobType.relabel: transcriber_speakers.relabel,
    }
    get_models(settings)  # loaded before the worker starts, as the worker's startup does
    await asyncio.to_thread(diarization_models)
    async with in_process_worker(settings, handlers, TRANSCRIBE_QUEUE), running_gateway(settings) as base:
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await page.goto(base + "/#/upload")
        await page.set_input_files("#file", str(media / "pyannote_sample.wav"))
        await page.select_option("#job-type", "transcribe")
        await page.check("#diarize")
        await page.click("#submit")
        await page.wait_for_selector('#current[data-state="succeeded"]', timeout=120_000)
        job_id = await page.inner_text("#current-id")
        job = (await api_call(page, "GET", f"v1/jobs/{job_id}"))["body"]
        assert job["options"]["diarize"] is True and job["options"]["captions"]["speaker_labels"] is True
        await page.click("#current-link")
        await page.wait_for_selector("video#player", timeout=15_000)
        await page.wait_for_selector("#speakers-panel:not([hidden])", timeout=15_000)

        tags = page.locator("#transcript .speaker")
        assert set(await tags.all_inner_texts()) == {"SPEAKER_00", "SPEAKER_01"}
        colours = {await t.get_attribute("data-label"): await t.get_attribute("class") for t in await tags.all()}
        assert len(set(colours.values())) == 2  # one colour per speaker
        rows = page.locator("#speakers-table tbody tr")
        assert await rows.count() == 2
        row = page.locator('#speakers-table tr[data-label="SPEAKER_00"]')
        assert await row.locator(".swatch").get_attribute("class") == f"swatch {colours['SPEAKER_00'].split()[-1]}"
        assert (await row.locator("td.num").inner_text()).endswith(" s")  # seconds of speech

        # an API problem shows next to the form, with its code (the input's maxlength is the API's)
        name = page.locator("#speaker-name-SPEAKER_00")
        await name.evaluate("i => i.removeAttribute('maxlength')")
        await name.fill("x" * 101)
        await name.press("Enter")
        await page.wait_for_selector("#speakers-problem:not([hidden])")
        assert (await page.inner_text("#speakers-problem")).startswith("invalid_name: ")

        # by keyboard: type the name, Space ticks "also enroll", Enter in the field renames
        await name.fill("Diane")
        await page.focus("#speakers-enroll")
        await page.keyboard.press("Space")
        assert await page.is_checked("#speakers-enroll")
        await name.press("Enter")
        await page.wait_for_function(
            "document.querySelector('#speakers-status').textContent.startsWith('renamed')", timeout=30_000
        )
        assert await page.inner_text("#speakers-status") == "renamed; enrolled Diane"
        assert await page.locator("#speakers-problem").is_hidden()
        assert set(await tags.all_inner_texts()) == {"Diane", "SPEAKER_01"}
        diane = tags.filter(has_text="Diane").first
        assert await diane.get_attribute("title") == "SPEAKER_00: Diane (named by hand)"
        assert "speaker-" in (await diane.get_attribute("class"))  # the colour stays with the label
        assert await diane.get_attribute("class") == colours["SPEAKER_00"]
        assert await page.input_value("#speaker-name-SPEAKER_00") == "Diane"
        # the captions track was reloaded: a cue names her (WebVTT voice span)
        await page.evaluate("document.querySelector('video#player').textTracks[0].mode = 'showing'")
        await page.wait_for_function(
            "(() => { const t = document.querySelector('video#player').textTracks[0];"
            " return t.cues && [...t.cues].some((c) => c.text.includes('<v Diane>')); })()",
            timeout=15_000,
        )
        assert await page.locator("#player track").count() == 1
        await diane.locator("xpath=..").locator(".seg-time").click()  # her first words, with their cue
        await page.wait_for_function(
            "(() => { const c = document.querySelector('video#player').textTracks[0].activeCues;"
            " return c && c.length > 0 && c[0].text.includes('<v Diane>'); })()",
            timeout=5_000,
        )
        await screenshot(page, "speakers.png", full_page=True)
        # readable on a phone: nothing wider than the screen, the name fields usable
        await page.set_viewport_size({"width": 390, "height": 844})
        wide = await page.evaluate(
            "[...document.querySelectorAll('#view-job *')].filter((e) => e.getBoundingClientRect().right > 391"
            " && !e.closest('.table-wrap, .transcript')).map((e) => e.id || e.className || e.tagName)"
        )
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, wide
        box = await name.bounding_box()
        assert box and box["width"] >= 100 and box["x"] + box["width"] <= 390
        await page.set_viewport_size({"width": 1280, "height": 860})

        # the enrolled voice in #/speakers, from this job's SPEAKER_00; Delete takes two clicks
        await page.click('nav a[data-view="speakers"]')
        voice = page.locator("#speaker-list tbody tr")
        await voice.first.wait_for()
        assert await voice.count() == 1
        assert await voice.get_attribute("data-state") == "ready"
        text = await voice.inner_text()
        assert "Diane" in text and f"{job_id} SPEAKER_00" in text
        await voice.locator("button.delete").click()
        assert await voice.locator("button.delete").inner_text() == "Confirm delete"
        await voice.locator("button.delete").click()
        await page.wait_for_selector("#speakers-empty:not([hidden])")
        assert (await api_call(page, "GET", "v1/speakers"))["body"]["speakers"] == []
        assert errors == []
        await context.close()


async def test_search_finds_a_transcript_and_opens_the_player_at_the_hit(redis, settings, media, browser):  # noqa: F811
    """The header's search box: a real transcript is indexed when its job ends; a hit shows the segment
    with the match marked and opens the job page with the player at the segment's start."""
    async with transcriber(settings), running_gateway(settings) as base:
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        # from 3 s on: the segments' times stay absolute, so a hit starts well into the media
        media_id = await upload_media(page, media / "jfk.flac")
        body = {"type": "transcribe", "input": {"media_id": media_id}, "options": {"language": "en", "start": 3.0}}
        created = await api_call(page, "POST", "v1/jobs", body)
        assert created["status"] == 202, created
        job_id = created["body"]["id"]
        assert (await wait_ended(page, job_id, timeout=120))["state"] == "succeeded"

        await page.fill("#search-q", "country")
        await page.press("#search-q", "Enter")
        await page.wait_for_url("**/#/search?q=country")
        hits = page.locator("#search-hits li.hit")
        await hits.first.wait_for(timeout=10_000)
        assert await hits.count() >= 1
        assert {await h.get_attribute("data-job-id") for h in await hits.all()} == {job_id}
        marks = await page.locator("#search-hits mark").all_inner_texts()
        assert marks and all(m.lower() == "country" for m in marks)
        assert "match" in await page.inner_text("#search-summary")
        await hits.first.locator(".hit-job", has_text="jfk.flac").wait_for()  # where the hit came from
        await screenshot(page, "search.png", full_page=True)

        first = hits.first
        start = float(await first.get_attribute("data-start"))
        assert start >= 3.0
        await first.locator("a.hit-link").click()
        assert f"#/jobs/{job_id}?t=" in page.url
        await page.wait_for_selector("video#player", timeout=15_000)
        await page.wait_for_function(
            f"Math.abs(document.querySelector('video#player').currentTime - {start}) < 0.05", timeout=10_000
        )
        await page.wait_for_selector("#transcript .segment.current")  # the transcript follows the seek

        # words in no transcript: no hits, said so
        await page.fill("#search-q", "zebra")
        await page.press("#search-q", "Enter")
        await page.wait_for_function("document.querySelector('#search-summary').textContent.startsWith('0 matches')")
        assert await hits.count() == 0
        assert errors == []
        await context.close()


async def test_queues_view_lists_live_workers_and_a_degraded_status(redis, settings, media, browser):  # noqa: F811
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1", "stall_seconds": 1.0})
    async with running_gateway(cfg) as base, running_compositor(cfg, {JobType.probe: probe_with_report}):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        # the compose queue's last half hour: jobs that ended 22, 15, 9, 5, 2 and 1 minute(s) ago, as the
        # job store records them (one stats member per ended job, scored by its end time) ...
        now = time.time()
        earlier = {"succeeded": {22: 6, 15: 1, 9: 4, 5: 2, 2: 5, 1: 3}, "failed": {15: 2, 5: 1}}
        for outcome, per_minute in earlier.items():
            for ago, n in per_minute.items():
                await redis.zadd(
                    stats_key(COMPOSE_QUEUE, outcome), {f"j_earlier_{ago}_{i}": now - 60 * ago for i in range(n)}
                )
        # ... and now two probes succeed and one fails
        created = [
            await api_call(page, "POST", "v1/jobs", {"type": "probe", "input": {"path": str(media / name)}})
            for name in ("jfk.flac", "jfk_talk.mp4", "jfk.txt")
        ]
        for job in created:
            assert job["status"] == 202, job
            await wait_ended(page, job["body"]["id"])
        queues = (await api_call(page, "GET", "v1/queues"))["body"]["queues"]
        compose = next(q for q in queues if q["name"].endswith(":compose"))
        series = compose["throughput"]
        assert len(series) == 30 and series[-1]["minute"] > series[0]["minute"]
        # oldest first, one bucket per minute (a minute boundary passing meanwhile only shifts them all)
        assert [p["succeeded"] for p in series if p["succeeded"]] == [6, 1, 4, 2, 5, 3, 2]
        assert [p["failed"] for p in series if p["failed"]] == [2, 1, 1]
        assert series[-1]["succeeded"] == 2 or series[-2]["succeeded"] == 2
        await page.goto(base + "/#/queues")
        spark = page.locator('#queue-table tr[data-queue$=":compose"] svg.sparkline')
        await spark.wait_for()
        assert (await spark.get_attribute("data-succeeded"), await spark.get_attribute("data-failed")) == ("23", "4")
        assert await spark.locator("rect.ok").count() == 7 and await spark.locator("rect.bad").count() == 3
        assert "23 succeeded, 4 failed in the last 30 minutes; at most 6 a minute" in await spark.get_attribute(
            "aria-label"
        )
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


async def test_compose_a_timeline_with_a_logo_a_title_and_a_crossfade(redis, settings, browser, tmp_path):  # noqa: F811
    """The compose view: upload a still, a clip and a logo there, build two items, see the API's problem
    next to the item it names, fix it, submit, and play the result on the job page."""
    still = make_pattern(tmp_path / "still.png", "800x600")
    logo = make_image(tmp_path / "logo.png", "200x100", "red")
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with running_gateway(cfg) as base, running_compositor(cfg, COMPOSITOR_HANDLERS):
        context, page, errors = await open_console(browser, base)
        await sign_in(page)
        await page.goto(base + "/#/compose")
        await page.set_input_files("#compose-file", [str(still), str(GRID), str(logo)])
        await page.wait_for_function(
            "document.querySelector('#compose-upload-status').textContent === 'uploaded logo.png'", timeout=20_000
        )

        async def media_id(name: str) -> str:
            return await page.locator("#compose-logo option", has_text=name).get_attribute("value")

        first = page.locator("#compose-items li").nth(0)
        await first.locator("select.item-media").select_option(await media_id("still.png"))
        assert await first.locator("select.item-kind").input_value() == "image"  # a still: kind and duration filled
        assert await first.locator("input.item-duration").input_value() == "3"
        await first.locator("input.item-title").fill("Hello world")
        await page.click("#compose-add")
        second = page.locator("#compose-items li").nth(1)
        await second.locator("select.item-media").select_option(await media_id("grid_bbaf2n.mp4"))
        await second.locator("input.item-start").fill("2")
        await second.locator("input.item-end").fill("1")  # reversed: the API refuses it
        # reorder with the keyboard: item 2 up, then back down
        await page.get_by_role("button", name="Move item 2 up").focus()
        await page.keyboard.press("Enter")
        assert (
            await first.locator("select.item-media option:checked").inner_text() == "grid_bbaf2n.mp4 (360×288, 3.0 s)"
        )
        await page.keyboard.press("Tab")  # focus stayed on the moved item's button: the next one is "down"
        assert await page.evaluate("document.activeElement.getAttribute('aria-label')") == "Move item 1 down"
        await page.keyboard.press("Enter")
        assert (await first.locator("select.item-media option:checked").inner_text()).startswith("still.png")
        await page.select_option("#compose-logo", await media_id("logo.png"))
        await page.select_option("#compose-logo-position", "bottom-right")
        await page.fill("#compose-crossfade", "0.5")
        await page.select_option("#compose-resolution", "1280x720")
        await page.select_option("#compose-quality", "draft")
        await page.click("#compose-submit")
        await page.wait_for_selector("#compose-problem:not([hidden])")
        assert "invalid_options" in await page.inner_text("#compose-problem")
        assert "reversed trim" in await second.locator(".field-problem").inner_text()
        assert await second.get_attribute("class") == "compose-item invalid"
        assert await first.locator(".field-problem").inner_text() == ""
        assert "#/compose" in page.url
        await screenshot(page, "compose.png", full_page=True)

        await second.locator("input.item-start").fill("0.5")
        await second.locator("input.item-end").fill("2.5")
        await page.click("#compose-submit")
        await page.wait_for_url("**/#/jobs/j_*")
        await page.wait_for_selector("#job-state.state-succeeded", timeout=60_000)
        job = (await api_call(page, "GET", "v1/jobs/" + page.url.rsplit("/", 1)[1]))["body"]
        assert job["type"] == "compose"
        items = job["options"]["items"]
        assert [i["kind"] for i in items] == ["image", "video"]
        assert items[0]["text"]["words"] == ["Hello", "world"] and items[0]["duration"] == 3
        assert items[1]["trim"] == {"start": 0.5, "end": 2.5}
        assert all(i["logo"]["position"] == "bottom-right" for i in items)
        assert job["options"]["crossfade"] == 0.5
        assert (job["result"]["width"], job["result"]["height"]) == (1280, 720)
        assert abs(job["result"]["duration"] - 4.5) < 0.1  # 3 s + 2 s - 0.5 s of crossfade
        await page.wait_for_selector("video#player", timeout=15_000)
        await page.wait_for_function("document.querySelector('video#player').readyState >= 1", timeout=15_000)
        assert "output.mp4" in await page.inner_text("#media-note")
        assert errors == []
        await context.close()

        # readable on a phone: the form wraps, nothing scrolls sideways
        phone = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        p2 = await phone.new_page()
        await p2.goto(base + "/")
        await sign_in(p2)
        await p2.goto(base + "/#/compose")
        await p2.locator("#compose-items li select.item-media option").first.wait_for(state="attached")
        assert await p2.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        await phone.close()

"""The pieces the shared core was re-cut into: one home for keys, the media rule, the subtitle writer,
the caption workflow's hook and the start of an attempt."""

from __future__ import annotations

import pytest
import srt
import webvtt

from mediaflow.common.errors import InvalidInput
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.options import parse_options
from mediaflow.common.options.media import media_ref
from mediaflow.common.runtime.attempts import _plan_start
from mediaflow.common.subtitles import write_subtitles
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.common.workflows.caption import CAPTION


def test_every_redis_key_is_under_the_prefix_and_queues_name_their_pool() -> None:
    made = [
        keys.job("j_1"),
        keys.events("j_1"),
        keys.tenant_index("t"),
        keys.media("m_1"),
        keys.idempotency("t", "k"),
        keys.stats(keys.COMPOSE_QUEUE, "failed"),
        keys.wake(keys.COMPOSE_QUEUE),
        keys.WORKERS,
        keys.WEBHOOKS,
        *keys.ALL_QUEUES,
    ]
    assert all(k.startswith("mediaflow:") for k in made)
    assert len(set(made)) == len(made)
    assert [keys.queue_name(q) for q in keys.ALL_QUEUES] == ["transcribe", "compose", "compose-heavy"]
    # ARQ's own keys for a job, as ARQ names them (the enqueue script writes them with our record)
    assert keys.arq_definition("j_1") == "arq:job:j_1"
    assert keys.arq_lease("j_1") == "arq:in-progress:j_1"


def test_storage_paths_keep_a_jobs_files_under_one_prefix() -> None:
    assert keys.artifact("j_1", "captions.srt") == "jobs/j_1/captions.srt"
    assert keys.fetched_input("j_1", ".mp4").startswith(keys.job_files("j_1") + "/")
    assert keys.upload("m_1", "talk.mp4").startswith(keys.upload_prefix("m_1") + "/")


@pytest.mark.parametrize("body", [{"media_id": "m_1"}, {"path": "/srv/a.mp4"}, {"url": "https://example.com/a.mp3"}])
def test_a_media_reference_names_exactly_one_source(body: dict) -> None:
    assert media_ref(body) == body
    assert media_ref(None) is None


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({}, "invalid_input", "exactly one of media_id, path, url"),
        ({"media_id": "m_1", "path": "/a"}, "invalid_input", "exactly one of media_id, path, url"),
        ({"media_id": 7}, "invalid_request", "input.media_id"),
        ({"media": "m_1"}, "invalid_request", "input.media"),
        (["m_1"], "invalid_request", "input must be an object"),
    ],
)
def test_a_bad_media_reference_is_a_422_with_a_code(body: object, code: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        media_ref(body)
    assert caught.value.status == 422 and caught.value.code == code
    assert says in caught.value.message


def test_timeline_items_and_logos_use_the_same_rule() -> None:
    with pytest.raises(InvalidInput, match="video item: name the media with exactly one"):
        parse_options(JobType.compose, {"items": [{"kind": "video", "media_id": "m_1", "url": "https://a/b"}]})
    with pytest.raises(InvalidInput, match="logo: name the media with exactly one"):
        parse_options(JobType.compose, {"items": [{"kind": "video", "media_id": "m_1", "logo": {}}]})


def test_the_one_subtitle_writer_writes_srt_and_webvtt_that_parsers_read() -> None:
    cues = [(0.0, 1.5, ["Ask not what your country", "can do for you"]), (1.5, 3.25, ["ask what you can do"])]
    parsed = list(srt.parse(write_subtitles(cues, "srt")))
    assert [(p.start.total_seconds(), p.end.total_seconds()) for p in parsed] == [(0.0, 1.5), (1.5, 3.25)]
    assert parsed[0].content == "Ask not what your country\ncan do for you"
    vtt = webvtt.from_string(write_subtitles(cues, "vtt"))
    assert [c.text for c in vtt] == ["Ask not what your country\ncan do for you", "ask what you can do"]


def test_the_caption_workflow_weighs_its_steps_on_the_parent_bar() -> None:
    parent = Job(id="j_p", type=JobType.caption, state=JobState.running)
    transcribe = Job(id="j_t", type=JobType.transcribe, parent_id="j_p")
    compose = Job(id="j_c", type=JobType.compose, parent_id="j_p")
    assert WORKFLOWS[JobType.caption] is CAPTION
    assert CAPTION.progress(parent, transcribe, 0.0) == 0.0
    assert CAPTION.progress(parent, transcribe, 1.0) == pytest.approx(0.4)
    assert CAPTION.progress(parent, compose, 0.5) == pytest.approx(0.7)
    assert CAPTION.progress(parent, Job(id="j_x", type=JobType.probe), 0.5) is None


def test_an_attempt_starts_only_a_runnable_job_and_counts_it() -> None:
    queued = Job(id="j_1", type=JobType.probe, max_attempts=2)
    verdict, events = _plan_start(queued, "w1")
    assert verdict == "run" and queued.state == JobState.running and queued.attempt == 1 and queued.worker == "w1"
    assert [name for name, _ in events] == ["state"]
    lost = Job(id="j_2", type=JobType.probe, state=JobState.running, attempt=1, max_attempts=3, worker="w0")
    verdict, events = _plan_start(lost, "w1")
    assert verdict == "run" and lost.attempt == 2 and [name for name, _ in events] == ["log", "state"]
    assert _plan_start(Job(id="j_3", type=JobType.probe, state=JobState.cancelling), "w1")[0] == "cancel"
    assert _plan_start(Job(id="j_4", type=JobType.probe, state=JobState.succeeded), "w1")[0] == "skip"
    spent = Job(id="j_5", type=JobType.probe, state=JobState.running, attempt=2, max_attempts=2)
    assert _plan_start(spent, "w1")[0] == "exhausted"

"""The compose/caption options: what the gateway can refuse with 422 before anything runs."""

from __future__ import annotations

import pytest

from mediaflow.common.errors import InvalidInput
from mediaflow.common.jobs.keys import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.jobs.queues import is_heavy, queue_for
from mediaflow.common.options import parse_options
from mediaflow.common.options.compose import ComposeOptions
from mediaflow.common.settings import Settings

VIDEO = {"kind": "video", "media_id": "m_1"}


def compose(**kw) -> dict:
    return {"items": [VIDEO], **kw}


def test_defaults_and_aliases():
    opts = parse_options(JobType.compose, compose(output={"resolution": "4k"}))
    assert isinstance(opts, ComposeOptions)
    assert opts.output.size == (3840, 2160) and opts.output.encoder == "auto" and opts.output.fps == 30
    assert parse_options(JobType.compose, compose()).output.resolution == "1920x1080"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (compose(output={"resolution": "15360x8640"}), "unsupported output resolution"),  # 16K
        (compose(output={"resolution": "1x1"}), "unsupported output resolution"),
        (compose(output={"fps": 1000}), "fps"),
        (compose(output={"encoder": "vaapi"}), "encoder"),
        ({"items": [{"kind": "image", "media_id": "m_1"}]}, "needs a duration"),
        ({"items": [{"kind": "video", "media_id": "m_1", "trim": {"start": 2, "end": 2}}]}, "zero-length"),
        ({"items": [{"kind": "video", "media_id": "m_1", "trim": {"start": 3, "end": 1}}]}, "zero-length"),
        ({"items": [{**VIDEO, "logo": {"media_id": "m_2", "position": "middle-ish"}}]}, "position"),
        ({"items": [{**VIDEO, "logo": {"media_id": "m_2", "scale": 5}}]}, "scale"),
        ({"items": [{**VIDEO, "logo": {"position": "top-left"}}]}, "exactly one"),
        ({"items": [{"kind": "video"}]}, "exactly one"),
        ({"items": [{"kind": "video", "media_id": "m_1", "path": "/x"}]}, "exactly one"),
        ({"items": [{"kind": "slideshow", "media_id": "m_1"}]}, "kind"),
        ({"items": []}, "items"),
        ({"items": [{**VIDEO, "text": {"words": ["hi"], "font": "Arial,Bold:x=1"}}]}, "font"),
        ({"items": [{**VIDEO, "text": {"words": ["hi"], "color": "yellow"}}]}, "color"),
        ({"items": [{**VIDEO, "text": {"words": ["x" * 300]}}]}, "too long"),
        ({"items": [VIDEO, {"kind": "image", "media_id": "m_2", "duration": 0.5}], "crossfade": 1.0}, "crossfade"),
        (compose(captions={"job_id": "j_1;rm", "mode": "burn"}), "job_id"),
        (compose(captions={"job_id": "j_1", "mode": "karaoke"}), "mode"),
        (compose(bogus=1), "bogus"),
    ],
)
def test_invalid_timelines_are_refused(body, fragment):
    with pytest.raises(InvalidInput) as err:
        parse_options(JobType.compose, body)
    assert err.value.code == "invalid_options" and err.value.status == 422
    assert fragment in str(err.value.detail) + err.value.message


def test_caption_options():
    opts = parse_options(JobType.caption, {"mode": "both", "output": {"resolution": "720p"}})
    assert opts.mode == "both" and opts.output.resolution == "1280x720"
    with pytest.raises(InvalidInput):
        parse_options(JobType.caption, {"mode": "burn", "output": {"resolution": "8000x8000"}})


def test_routing_thresholds_are_configurable():
    settings = Settings()
    small = compose(output={"resolution": "3840x2160"})
    many_4k = {"items": [VIDEO] * 21, "output": {"resolution": "3840x2160"}}
    many_fhd = {"items": [VIDEO] * 41}
    assert queue_for(JobType.compose, small, settings) == COMPOSE_QUEUE
    assert queue_for(JobType.compose, many_4k, settings) == COMPOSE_HEAVY_QUEUE
    assert queue_for(JobType.compose, {"items": [VIDEO] * 21}, settings) == COMPOSE_QUEUE
    assert queue_for(JobType.compose, many_fhd, settings) == COMPOSE_HEAVY_QUEUE
    tuned = Settings(heavy_items=100, heavy_4k_items=30)
    assert not is_heavy(many_fhd, tuned) and not is_heavy(many_4k, tuned)
    assert queue_for(JobType.caption, small, settings) == COMPOSE_QUEUE


def test_submit_time_media_checks():
    from mediaflow.common.options.compose import check_timeline_media

    opts = parse_options(JobType.compose, {"items": [VIDEO, {**VIDEO, "media_id": "m_2", "logo": {"media_id": "m_3"}}]})
    good = {
        "m_1": [{"kind": "video", "width": 320, "height": 240}, {"kind": "audio"}],
        "m_2": [{"kind": "video", "width": 1920, "height": 1080}],
    }
    check_timeline_media(opts, good)  # m_3 unknown here: left to the worker
    with pytest.raises(InvalidInput) as err:
        check_timeline_media(opts, {**good, "m_2": [{"kind": "audio", "channels": 2}]})
    assert (err.value.code, err.value.status) == ("no_video_stream", 422) and "items.1" in err.value.message
    with pytest.raises(InvalidInput) as err:
        check_timeline_media(opts, {**good, "m_3": [{"kind": "video", "width": 1, "height": 1}]})
    assert err.value.code == "image_too_small" and "items.1.logo" in err.value.message

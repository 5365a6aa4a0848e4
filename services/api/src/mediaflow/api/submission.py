"""Turning a job body into a validated Job record: type, options, inputs and the media they name.

Everything that can be wrong with a body is found here, before anything is written, so an accepted job
is one a worker understands and a refused one leaves no trace.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mediaflow.common.errors import MediaflowError, NotFound
from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.model import Job, JobType, Media, Priority
from mediaflow.common.jobs.queues import queue_for
from mediaflow.common.jobs.webhooks import check_webhook_url
from mediaflow.common.options import parse_options
from mediaflow.common.options.media import media_ref
from mediaflow.common.storage import allowed_path

from .inputs import checked_url, media_input
from .services import Services

# Job types that work on one input media (compose names its media inside options.items).
NEEDS_INPUT = frozenset({JobType.transcribe, JobType.caption, JobType.probe})


class JobRequest(BaseModel):
    """A job body (docs/design.md, "Job bodies"). `options` are validated per type."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "transcribe", "input": {"media_id": "m_01j..."}, "options": {"language": "en"}},
                {"type": "probe", "input": {"media_id": "m_01j..."}},
            ]
        },
    )

    type: str = Field(description="transcribe | compose | caption | probe")
    # Checked by build_job (422 invalid_priority); docs/api.md, "Priority".
    priority: str | None = Field(None, description="high | normal | low (default): which queued work runs first")
    # Checked by build_job (media_ref: 422 invalid_input); the OpenAPI document shows MediaRef (openapi.py).
    input: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    webhook_url: str | None = Field(
        None,
        description="called (POST, signed per Standard Webhooks) when the job "
        "ends; 422 webhooks_disabled when the server has no secret",
    )


class MediaCache:
    """Media lookups of one request (a batch often names the same media many times)."""

    def __init__(self, svc: Services, tenant: str) -> None:
        self.svc, self.tenant = svc, tenant
        self.known: dict[str, Media] = {}

    async def get(self, media_id: str) -> Media:
        if media_id not in self.known:
            self.known[media_id] = await self.svc.media.get(media_id, self.tenant)
        return self.known[media_id]


def parse_priority(raw: Any) -> Priority:
    if raw is None:
        return Priority.normal
    try:
        return Priority(raw)
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise MediaflowError(
            f"unknown priority {raw!r} (one of: {names})", code="invalid_priority", status=422
        ) from None


# What a client submits; `enroll` and `relabel` jobs are made by the speakers routes only.
SUBMITTABLE = (JobType.transcribe, JobType.compose, JobType.caption, JobType.probe)


def parse_type(raw: Any, allowed: tuple[JobType, ...] = SUBMITTABLE) -> JobType:
    if isinstance(raw, str) and raw in allowed:
        return JobType(raw)
    names = ", ".join(t.value for t in allowed)
    raise MediaflowError(f"unknown job type {raw!r} (one of: {names})", code="unknown_job_type", status=422)


async def _allowed_path(svc: Services, raw: str) -> str:
    try:
        return str(await asyncio.to_thread(allowed_path, raw, svc.settings.allowed_roots))
    except OSError as exc:  # e.g. ENAMETOOLONG: a component over 255 bytes
        reason = exc.strerror or type(exc).__name__
        raise MediaflowError(f"the path cannot be opened: {reason}", code="invalid_path", status=422) from None


def check_text(value: Any, where: str = "body") -> None:
    """Refuse strings no storage or Redis can hold (a lone UTF-16 surrogate, JSON "\\ud800"), anywhere
    in a body, before they reach a key, a path or a record."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MediaflowError(
                f"{where}: the text holds a lone UTF-16 surrogate (not valid Unicode)", code="invalid_text", status=422
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_text(item, f"{where}.{index}")


async def _check_option_media(options: dict[str, Any], svc: Services, media: MediaCache) -> None:
    """Compose timelines name media inside options: each must exist for this tenant, server paths must
    be allowed (they are rewritten to their resolved form), URLs must pass the URL policy."""
    for item in options.get("items") or []:
        for holder in (item, item.get("logo") or {}):
            if holder.get("media_id"):
                await media.get(holder["media_id"])
            if holder.get("path"):
                holder["path"] = await _allowed_path(svc, holder["path"])
            if holder.get("url"):
                holder["url"] = await checked_url(holder["url"], svc.settings)
    captions = options.get("captions") or {}
    if captions.get("job_id"):
        await svc.store.get(captions["job_id"], media.tenant)


def _check_translation(options: dict[str, Any], svc: Services) -> None:
    """A `translate_to` other than English needs a translation model (Whisper itself translates into
    English only): refused at submit rather than failing on a worker. The worker checks again."""
    target = options.get("translate_to") or (options.get("transcribe") or {}).get("translate_to")
    if target and str(target).lower() != "en" and not svc.settings.translation_model:
        raise MediaflowError(
            f"translate_to {target!r}: this server has no translation model (MEDIAFLOW_TRANSLATION_MODEL); "
            "without one, transcripts translate into English only",
            code="unsupported_language",
            status=422,
        )


async def build_job(
    body: dict[str, Any],
    tenant: str,
    svc: Services,
    media: MediaCache | None = None,
    types: tuple[JobType, ...] = SUBMITTABLE,
) -> Job:
    """Validate a job body and resolve its inputs; raises MediaflowError / Problem with a code."""
    media = media or MediaCache(svc, tenant)
    check_text(body)
    job_type = parse_type(body.get("type"), types)
    unknown = set(body) - {"type", "priority", "input", "options", "webhook_url"}
    if unknown:
        raise MediaflowError(f"unknown field(s) {', '.join(sorted(unknown))}", code="invalid_request", status=422)
    raw_options = body.get("options")
    priority = parse_priority(body.get("priority"))
    if raw_options is not None and not isinstance(raw_options, dict):
        raise MediaflowError("options must be an object", code="invalid_options", status=422)
    options = parse_options(job_type, raw_options).model_dump(mode="json")
    _check_translation(options, svc)

    named = media_ref(body.get("input"))
    resolved_input: dict[str, Any] = {}
    if named is None:
        if job_type in NEEDS_INPUT:
            raise MediaflowError(
                f'a {job_type.value} job needs an input: {{"media_id": ...}}, {{"path": ...}} or {{"url": ...}}',
                code="input_required",
                status=422,
            )
    elif "media_id" in named:
        resolved_input = media_input(await media.get(named["media_id"]))
    elif "url" in named:
        resolved_input = {"url": await checked_url(named["url"], svc.settings)}
    else:
        resolved_input = {"path": await _allowed_path(svc, named["path"])}
    if job_type == JobType.compose:
        await _check_option_media(options, svc, media)
    webhook_url = None
    if body.get("webhook_url") is not None:
        webhook_url = await asyncio.to_thread(check_webhook_url, body["webhook_url"], svc.settings)

    return Job(
        id=new_job_id(),
        type=job_type,
        queue=queue_for(job_type, options, svc.settings),
        priority=priority,
        max_attempts=svc.settings.max_tries,
        options=options,
        input=resolved_input,
        tenant=tenant,
        webhook_url=webhook_url,
    )


def rejection(index: int, exc: Exception) -> dict[str, Any]:
    from .problems import Problem

    if isinstance(exc, Problem):
        return {"index": index, "code": exc.code, "detail": exc.detail, "status": exc.status}
    if isinstance(exc, NotFound | MediaflowError):
        return {"index": index, "code": exc.code, "detail": exc.message, "status": exc.status}
    raise exc

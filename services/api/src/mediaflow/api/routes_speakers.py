"""Speakers: the tenant's registry of named voices, and renaming a transcript's speakers.

`POST /v1/speakers` enrolls a voice from a clip (an `enroll` job embeds it on the transcriber; the
speaker is `pending`, then `ready`) or from a speaker of a finished transcript (its voice print in
speakers.json is copied: `ready` at once). Later transcribe jobs of the tenant name the speakers that
match (the transcriber's speakers.py). `PATCH /v1/jobs/{id}/speakers` renames speakers: a `relabel`
job rewrites the transcript and captions from transcript.json, without ASR.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse, Response

from mediaflow.common.errors import Conflict, InvalidInput, NotFound
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.voices import SPEAKERS_ARTIFACT, TRANSCRIPT_ARTIFACT, Voice, VoiceRegistry, new_voice_id
from mediaflow.common.telemetry import send_span

from .auth import require_tenant
from .problems import problem_responses
from .services import Services, services
from .submission import build_job, check_text

router = APIRouter(prefix="/v1", tags=["speakers"])

MAX_NAME = 100

ENROLL_EXAMPLES = [
    {"name": "Diane", "media_id": "m_01j..."},
    {"name": "Diane", "job_id": "j_01j...", "speaker": "SPEAKER_00"},
]


def _name(raw: Any) -> str:
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be a non-empty string of at most {MAX_NAME} characters", code="invalid_name")
    return name


def _fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_request")
    check_text(body)
    unknown = set(body) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}", code="invalid_request")
    return body


async def _transcript_job(svc: Services, job_id: Any, tenant: str) -> Job:
    """A succeeded transcribe job of the tenant (404 / 409 / 422 otherwise)."""
    if not isinstance(job_id, str):
        raise InvalidInput("job_id must be a string", code="invalid_request")
    job = await svc.store.get(job_id, tenant)
    if job.type != JobType.transcribe:
        raise InvalidInput(f"job {job.id} is a {job.type.value} job, not a transcribe job", code="not_a_transcript")
    if job.state != JobState.succeeded:
        raise Conflict(f"job {job.id} is {job.state.value}; speakers need a succeeded job", code="job_not_finished")
    return job


async def _read_json(svc: Services, job: Job, name: str) -> Any:
    def read() -> bytes:
        with svc.storage.open(keys.artifact(job.id, name)) as f:
            return f.read()

    return json.loads(await asyncio.to_thread(read))


async def _voice_prints(svc: Services, job: Job) -> dict[str, dict[str, Any]]:
    """The job's speakers.json by label (409 `no_voice_prints` when it has none)."""
    if SPEAKERS_ARTIFACT not in {a.name for a in job.artifacts}:
        raise Conflict(
            f"job {job.id} has no voice prints: it was not diarized (options.diarize) by the offline diarizer",
            code="no_voice_prints",
        )
    return {s["label"]: s for s in (await _read_json(svc, job, SPEAKERS_ARTIFACT))["speakers"]}


def _unknown_label(job: Job, label: Any, have: list[str]) -> NotFound:
    listed = ", ".join(sorted(have)) or "none"
    return NotFound(f"job {job.id} has no speaker {label!r} (speakers: {listed})", code="speaker_label_not_found")


def _from_print(name: str, job: Job, label: str, prints: dict[str, dict[str, Any]]) -> Voice:
    if label not in prints or not prints[label].get("embedding"):
        raise _unknown_label(job, label, list(prints))
    found = prints[label]
    return Voice(
        id=new_voice_id(),
        name=name,
        state="ready",
        seconds=found.get("seconds", 0.0),
        source={"job_id": job.id, "speaker": label},
        embedding=found["embedding"],
    )


async def _resolved(svc: Services, voices: list[Voice]) -> list[Voice]:
    """A pending speaker whose enroll job failed or was cancelled is `failed`, with the job's error."""
    pending = [v.job_id for v in voices if v.state == "pending" and v.job_id]
    ended = {j.id: j for j in await svc.store.get_many(pending) if j.state in (JobState.failed, JobState.cancelled)}
    for voice in voices:
        job = ended.get(voice.job_id or "")
        if job is not None:
            voice.state = "failed"
            voice.error = job.error.model_dump() if job.error else {"code": "cancelled", "message": "job cancelled"}
    return voices


@router.post(
    "/speakers",
    status_code=201,
    responses={202: {"description": "a clip is being embedded (state pending)"}}
    | problem_responses(400, 401, 404, 409, 422, 503),
    summary="Enroll a named voice: from a clip (media_id) or a finished transcript's speaker (job_id + speaker)",
)
async def enroll_speaker(
    body: Any = Body(..., examples=ENROLL_EXAMPLES),
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
) -> JSONResponse:
    fields = _fields(body, {"name", "media_id", "job_id", "speaker"})
    name = _name(fields.get("name"))
    registry = VoiceRegistry(svc.redis)
    if ("media_id" in fields) == ("job_id" in fields):
        raise InvalidInput(
            'name the voice with exactly one of {"media_id"} (a clip) or {"job_id", "speaker"}', code="invalid_source"
        )
    if "job_id" in fields:
        if not isinstance(fields.get("speaker"), str):
            raise InvalidInput('"job_id" goes with "speaker", a label such as "SPEAKER_00"', code="invalid_source")
        job = await _transcript_job(svc, fields["job_id"], tenant)
        voice = _from_print(name, job, fields.get("speaker"), await _voice_prints(svc, job))
        await registry.put(tenant, voice)
        return JSONResponse(voice.public(), status_code=201, headers={"Location": f"/v1/speakers/{voice.id}"})
    if "speaker" in fields:
        raise InvalidInput('"speaker" goes with "job_id"', code="invalid_source")
    voice = Voice(id=new_voice_id(), name=name, source={"media_id": fields["media_id"]})
    body = {"type": "enroll", "input": {"media_id": fields["media_id"]}, "options": {"speaker_id": voice.id}}
    job = await build_job(body, tenant, svc, types=(JobType.enroll,))
    voice.job_id = job.id
    await registry.put(tenant, voice)  # before the job, which makes it ready
    try:
        with send_span(job.queue, job.id) as traceparent:
            job.traceparent = traceparent
            await svc.dispatcher.submit(job)
    except BaseException:
        await registry.delete(tenant, voice.id)
        raise
    svc.metrics.jobs_submitted.labels(job.type.value).inc()
    return JSONResponse(voice.public(), status_code=202, headers={"Location": f"/v1/speakers/{voice.id}"})


@router.get("/speakers", responses=problem_responses(401, 503), summary="The tenant's enrolled speakers")
async def list_speakers(tenant: str = Depends(require_tenant), svc: Services = Depends(services)) -> dict[str, Any]:
    voices = await _resolved(svc, await VoiceRegistry(svc.redis).all(tenant))
    return {"speakers": [v.public() for v in voices]}


@router.get("/speakers/{speaker_id}", responses=problem_responses(401, 404, 503), summary="Get an enrolled speaker")
async def get_speaker(
    speaker_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> dict[str, Any]:
    voice = await VoiceRegistry(svc.redis).get(tenant, speaker_id)
    return (await _resolved(svc, [voice]))[0].public()


@router.delete(
    "/speakers/{speaker_id}", status_code=204, responses=problem_responses(401, 404, 503), summary="Forget a speaker"
)
async def delete_speaker(
    speaker_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> Response:
    await VoiceRegistry(svc.redis).delete(tenant, speaker_id)
    return Response(status_code=204)


@router.patch(
    "/jobs/{job_id}/speakers",
    status_code=202,
    responses=problem_responses(400, 401, 404, 409, 422, 503),
    summary="Rename a transcript's speakers; its captions are rewritten without ASR (a relabel job)",
)
async def rename_speakers(
    job_id: str,
    body: Any = Body(..., examples=[{"names": {"SPEAKER_00": "Diane", "SPEAKER_01": None}, "enroll": True}]),
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
) -> JSONResponse:
    fields = _fields(body, {"names", "enroll"})
    names = fields.get("names")
    if not isinstance(names, dict) or not names:
        raise InvalidInput('"names" must map speaker labels to names (or null), e.g. {"SPEAKER_00": "Diane"}')
    names = {label: None if name is None else _name(name) for label, name in names.items()}
    enroll = fields.get("enroll", False)
    if not isinstance(enroll, bool):
        raise InvalidInput('"enroll" must be true or false', code="invalid_request")
    job = await _transcript_job(svc, job_id, tenant)
    if TRANSCRIPT_ARTIFACT not in {a.name for a in job.artifacts}:
        raise Conflict(
            f"job {job.id} kept no {TRANSCRIPT_ARTIFACT} (formats), so its captions cannot be rewritten",
            code="transcript_unavailable",
        )
    have: list[str] = (job.result or {}).get("speakers") or []
    for label in names:
        if label not in have:
            raise _unknown_label(job, label, have)
    enrolled: list[Voice] = []
    if enroll:
        prints = await _voice_prints(svc, job)
        enrolled = [_from_print(name, job, label, prints) for label, name in names.items() if name is not None]
    body = {"type": "relabel", "options": {"job_id": job.id, "names": names}}
    relabel = await build_job(body, tenant, svc, types=(JobType.relabel,))
    with send_span(relabel.queue, relabel.id) as traceparent:
        relabel.traceparent = traceparent
        relabel, _ = await svc.dispatcher.submit(relabel)
    svc.metrics.jobs_submitted.labels(relabel.type.value).inc()
    registry = VoiceRegistry(svc.redis)
    for voice in enrolled:
        await registry.put(tenant, voice)
    return JSONResponse(
        {"job": relabel.public(), "enrolled": [v.public() for v in enrolled]},
        status_code=202,
        headers={"Location": f"/v1/jobs/{relabel.id}"},
    )

"""Jobs: submit, list, get, cancel, retry, artifact download."""

from __future__ import annotations

import hashlib
import json
import re

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.retention import delete_job as delete_job_and_files
from mediaflow.common.telemetry import send_span

from .artifacts import artifact_response
from .auth import require_tenant
from .problems import Problem, problem_responses
from .schemas import JobList, JobResource
from .services import Services, services
from .submission import JobRequest, build_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_ID = re.compile(r"^j_[0-9a-z]{26}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def _job_response(job: Job, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(job.public(), status_code=status, headers=headers)


def request_fingerprint(body: JobRequest) -> str:
    """What an Idempotency-Key is bound to: the request body, canonically serialised."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@router.post(
    "",
    status_code=202,
    response_model=JobResource,
    responses=problem_responses(400, 401, 403, 404, 422, 503),
    summary="Submit a job (202 + Location; Idempotency-Key honoured)",
)
async def submit_job(
    body: JobRequest,
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None, description="the same key returns the same job (24 h, per tenant)"),
) -> JSONResponse:
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise Problem(422, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
    await svc.pressure.check_submit()
    job = await build_job(body.model_dump(exclude_unset=True), tenant, svc)
    with send_span(job.queue, job.id) as traceparent:
        job.traceparent = traceparent
        job, created = await svc.dispatcher.submit(job, idempotency_key, request_fingerprint(body))
    if created:
        svc.metrics.jobs_submitted.labels(job.type.value).inc()
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _job_response(job, 202, headers)


@router.get(
    "",
    response_model=JobList,
    responses=problem_responses(401, 422, 503),
    summary="List jobs, newest first (filters, cursor pagination)",
)
async def list_jobs(
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
    state: JobState | None = None,
    type: JobType | None = None,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> JSONResponse:
    if cursor is not None and not JOB_ID.match(cursor):
        raise Problem(422, "invalid_cursor", "cursor must be the next_cursor of a previous page")
    jobs, next_cursor = await svc.store.list(
        tenant, state=state.value if state else None, type=type.value if type else None, limit=limit, cursor=cursor
    )
    return JSONResponse({"jobs": [j.public() for j in jobs], "next_cursor": next_cursor})


@router.get("/{job_id}", response_model=JobResource, responses=problem_responses(401, 404, 503), summary="Get a job")
async def get_job(
    job_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    return _job_response(await svc.store.get(job_id, tenant), 200)


@router.post(
    "/{job_id}/cancel",
    response_model=JobResource,
    status_code=202,
    responses=problem_responses(401, 404, 409, 503),
    summary="Cancel a queued or running job (409 job_finished when it already ended)",
)
async def cancel_job(
    job_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    return _job_response(await svc.dispatcher.cancel(job_id, tenant), 202)


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 503),
    summary="Delete a job: cancel it if it has not ended, then remove its record, events and artifacts "
    "(a caption parent's children too)",
)
async def delete_job(job_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)) -> Response:
    await delete_job_and_files(svc.dispatcher, svc.storage, job_id, tenant)
    return Response(status_code=204)


@router.post(
    "/{job_id}/retry",
    response_model=JobResource,
    status_code=202,
    responses=problem_responses(401, 404, 409, 503),
    summary="Retry a failed or cancelled job (new attempt, same id)",
)
async def retry_job(
    job_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    job = await svc.dispatcher.retry(job_id, tenant)
    return _job_response(job, 202, {"Location": f"/v1/jobs/{job.id}"})


@router.api_route(
    "/{job_id}/artifacts/{name}",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={
        200: {"description": "the artifact, with its own type", "content": {"*/*": {}}},
        206: {"description": "the requested byte range"},
        **problem_responses(401, 404, 416, 503),
    },
    summary="Download an artifact (HTTP Range supported; HEAD gives size and type)",
)
async def download_artifact(
    request: Request, job_id: str, name: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> Response:
    job = await svc.store.get(job_id, tenant)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        raise Problem(404, "artifact_not_found", f"job {job_id} has no artifact {name!r}")
    return await artifact_response(svc.storage, keys.artifact(job.id, artifact.name), artifact, request)

"""The OpenAPI document, made to say what the routes really accept.

FastAPI documents `POST /v1/jobs` as the loose `JobRequest` the route parses (so that a wrong type or
option answers with our own codes, not a generic 422). Here that body becomes the union of one schema
per job type, each with its own options model, and `POST /v1/jobs` links to the routes of the job it
created, so clients (and fuzzers) can follow them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from mediaflow.common.jobs.model import Priority
from mediaflow.common.options import CaptionOptions, ComposeOptions, ProbeOptions, TranscribeOptions
from mediaflow.common.options.media import MediaRef
from mediaflow.common.settings import Settings

REF = "#/components/schemas/{model}"
WEBHOOK = Field(None, description="called (POST, signed per Standard Webhooks) when the job ends")


def _job_body(
    job_type: str, options: type[BaseModel], *, needs_input: bool = True, needs_options: bool = False
) -> type[BaseModel]:
    """The body of one job type: its `type`, `input` (a MediaRef), its own options model, `webhook_url`."""
    return create_model(
        f"{job_type.capitalize()}Job",
        __config__=ConfigDict(extra="forbid"),
        type=(Literal[job_type], ...),  # type: ignore[valid-type]
        priority=(Priority, Field(Priority.normal, description="which queued work runs first")),
        input=(MediaRef, ...) if needs_input else (MediaRef | None, None),
        options=(options, ...) if needs_options else (options | None, None),
        webhook_url=(str | None, WEBHOOK),
    )


TranscribeJob = _job_body("transcribe", TranscribeOptions)
ComposeJob = _job_body("compose", ComposeOptions, needs_input=False, needs_options=True)
CaptionJob = _job_body("caption", CaptionOptions)
ProbeJob = _job_body("probe", ProbeOptions)


JobBody = Annotated[TranscribeJob | ComposeJob | CaptionJob | ProbeJob, Field(discriminator="type")]

JOB_ID = {"job_id": "$response.body#/id"}
JOB_LINKS = {
    "GetJob": ("get_job_v1_jobs__job_id__get", "the job"),
    "CancelJob": ("cancel_job_v1_jobs__job_id__cancel_post", "cancel the job"),
    "RetryJob": ("retry_job_v1_jobs__job_id__retry_post", "retry the job"),
    "FollowJob": ("stream_events_v1_jobs__job_id__events_get", "the job's events"),
    "DownloadArtifact": ("download_artifact_v1_jobs__job_id__artifacts__name__get", "an artifact of the job"),
    "ArtifactInfo": ("download_artifact_v1_jobs__job_id__artifacts__name__head", "an artifact's size and type"),
}
# Query parameters the routes check themselves (to answer with their own codes): their real shape.
PARAMETER_PATTERNS = {
    ("/v1/jobs", "get", "cursor"): r"^j_[0-9a-z]{26}$",
    ("/v1/batches", "get", "cursor"): r"^b_[0-9a-z]{26}$",
    ("/v1/media", "get", "cursor"): r"^m_[0-9a-z]{26}$",
}


def _links(operations: set[str]) -> dict[str, Any]:
    return {
        name: {"operationId": op, "parameters": JOB_ID, "description": what}
        for name, (op, what) in JOB_LINKS.items()
        if op in operations
    }


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        body = TypeAdapter(JobBody).json_schema(ref_template=REF)
        schemas.update(body.pop("$defs", {}))
        schemas["JobRequest"] = {**body, "title": "JobRequest", "description": "a job body: one schema per type"}
        if "BatchRequest" in schemas:  # each item names media as a job's input does
            items = schemas["BatchRequest"]["properties"]["items"]
            items.update(maxItems=settings.max_batch_jobs)
            if "MediaRef" in schemas:
                items["items"] = {"$ref": REF.format(model="MediaRef")}
        seen: set[str] = set()
        for path_item in doc["paths"].values():  # FastAPI gives GET and HEAD of one route the same id
            for method, op in path_item.items():
                if op.get("operationId") in seen:
                    op["operationId"] = f"{op['operationId'].removesuffix('_get')}_{method}"
                seen.add(op.get("operationId", ""))
        for (path, method, name), pattern in PARAMETER_PATTERNS.items():
            for parameter in doc["paths"].get(path, {}).get(method, {}).get("parameters", []):
                if parameter["name"] == name:
                    parameter["schema"] = {"type": "string", "pattern": pattern}
        operations = {
            op["operationId"] for path in doc["paths"].values() for op in path.values() if "operationId" in op
        }
        for path, method in (("/v1/jobs", "post"), ("/v1/jobs/{job_id}/retry", "post")):
            accepted = doc["paths"].get(path, {}).get(method, {}).get("responses", {}).get("202")
            if accepted is not None:
                accepted["links"] = _links(operations)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]

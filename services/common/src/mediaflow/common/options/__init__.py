"""Validated options per job type (the `POST /v1/jobs` bodies of docs/design.md, "Job bodies").

The gateway validates with these before anything is enqueued; workers parse the same models, so a
job that was accepted is one a worker understands.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import InvalidInput
from ..jobs.model import JobType
from .compose import CaptionOptions, ComposeOptions, ProbeOptions
from .transcribe import CaptionRules, TranscribeOptions

OPTIONS_MODELS: dict[JobType, type[BaseModel]] = {
    JobType.transcribe: TranscribeOptions,
    JobType.compose: ComposeOptions,
    JobType.caption: CaptionOptions,
    JobType.probe: ProbeOptions,
}


def parse_options(job_type: JobType, options: dict[str, Any] | None) -> BaseModel:
    try:
        return OPTIONS_MODELS[job_type].model_validate(options or {})
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"loc": "", "msg": "invalid"}
        raise InvalidInput(
            f"invalid options for {job_type.value}: {first['loc']}: {first['msg']}",
            code="invalid_options",
            detail={"errors": errors},
        ) from None


__all__ = [
    "OPTIONS_MODELS",
    "CaptionOptions",
    "CaptionRules",
    "ComposeOptions",
    "ProbeOptions",
    "TranscribeOptions",
    "parse_options",
]

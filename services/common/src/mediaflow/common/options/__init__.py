"""Validated options per job type (the `POST /v1/jobs` bodies of docs/design.md, "Job bodies").

The gateway validates with these before anything is enqueued; workers parse the same models, so a
job that was accepted is one a worker understands.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import InvalidInput
from ..jobs.model import JobType
from .compose import CaptionOptions, ComposeOptions, ProbeOptions
from .languages import check_languages
from .speakers import EnrollOptions, RelabelOptions
from .transcribe import CaptionRules, TranscribeOptions

OPTIONS_MODELS: dict[JobType, type[BaseModel]] = {
    JobType.transcribe: TranscribeOptions,
    JobType.compose: ComposeOptions,
    JobType.caption: CaptionOptions,
    JobType.probe: ProbeOptions,
    JobType.enroll: EnrollOptions,
    JobType.relabel: RelabelOptions,
}


def non_finite(value: Any, where: str = "") -> str | None:
    """Where a NaN, an infinity (JSON `1e999`) or an integer beyond 64 bits hides in a value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "options"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return where or "options"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := non_finite(item, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def parse_options(job_type: JobType, options: dict[str, Any] | None) -> BaseModel:
    if (where := non_finite(options)) is not None:
        raise InvalidInput(
            f"invalid options for {job_type.value}: {where}: numbers must be finite and within range",
            code="invalid_options",
            detail={"errors": [{"loc": where, "msg": "numbers must be finite and within range"}]},
        )
    try:
        parsed = OPTIONS_MODELS[job_type].model_validate(options or {})
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"loc": "", "msg": "invalid"}
        raise InvalidInput(
            f"invalid options for {job_type.value}: {first['loc']}: {first['msg']}",
            code="invalid_options",
            detail={"errors": errors},
        ) from None
    check_languages(parsed)  # 422 unsupported_language
    return parsed


__all__ = [
    "OPTIONS_MODELS",
    "CaptionOptions",
    "CaptionRules",
    "ComposeOptions",
    "ProbeOptions",
    "TranscribeOptions",
    "non_finite",
    "parse_options",
]

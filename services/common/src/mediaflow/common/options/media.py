"""The one rule for naming media, wherever a body names it (a job's `input`, a timeline item, a logo):
exactly one of an uploaded `media_id`, a `path` under an allow-listed root, or an http(s) `url`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidInput

SOURCES = ("media_id", "path", "url")


class MediaRef(BaseModel):
    """Names media: exactly one of `media_id`, `path` or `url`."""

    model_config = ConfigDict(extra="forbid")
    what: ClassVar[str] = "input"  # how errors name the holder

    media_id: str | None = Field(None, description="an id from POST /v1/media")
    path: str | None = Field(None, description="an absolute path under one of the server's allowed roots")
    url: str | None = Field(
        None,
        description="an http(s) URL the worker downloads; it must point to a public "
        "address or a host the operator allowed (422 url_not_allowed)",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> MediaRef:
        if sum(getattr(self, name) is not None for name in SOURCES) != 1:
            raise ValueError(f"{self.label()}: name the media with exactly one of media_id, path, url")
        return self

    def label(self) -> str:
        return self.what

    def source(self) -> dict[str, str]:
        """The one source named, e.g. {"media_id": "m_..."}."""
        return {name: value for name in SOURCES if (value := getattr(self, name)) is not None}


def media_ref(value: Any) -> dict[str, str] | None:
    """A job body's `input`: None, or the one source it names. A malformed `input` (not an object, a
    field that is not a string, an unknown field) is 422 `invalid_request`, like any malformed body;
    one that breaks the rule above is 422 `invalid_input`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(
            'input must be an object: {"media_id": ...}, {"path": ...} or {"url": ...}', code="invalid_request"
        )
    try:
        return MediaRef.model_validate(value).source()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f".{part}" for part in first["loc"])
        if first["type"] == "value_error":  # the model's own check, which names the input
            raise InvalidInput(first["msg"].removeprefix("Value error, ")) from None
        raise InvalidInput(f"input{where}: {first['msg']}", code="invalid_request") from None

"""Where a job's media comes from: an uploaded `media_id`, a server path under an allow-listed root,
or a URL (refused: the gateway does not fetch URLs).

Path rules: `mediaflow.common.storage.allowed_path` (shared with the workers, which check again).
"""

from __future__ import annotations

from typing import Any

from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs import Media


def media_input(media: Media) -> dict[str, Any]:
    return {"media_id": media.id, "storage_key": media.key}


def check_input_shape(value: Any) -> dict[str, Any] | None:
    """Validates `input` of a job body: None, or exactly one of media_id / path / url (strings)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MediaflowError("input must be an object: {\"media_id\": ...} or {\"path\": ...}",
                             code="invalid_input", status=422)
    named = [k for k in ("media_id", "path", "url") if value.get(k) is not None]
    unknown = set(value) - {"media_id", "path", "url"}
    if len(named) != 1 or unknown or not isinstance(value[named[0]], str):
        raise MediaflowError("input names the media with exactly one of media_id, path or url (a string)",
                             code="invalid_input", status=422)
    if named[0] == "url":
        raise MediaflowError("URL inputs are disabled on this server: upload the media (POST /v1/media) "
                             "or name a path under an allowed root", code="url_inputs_disabled", status=422)
    return {named[0]: value[named[0]]}

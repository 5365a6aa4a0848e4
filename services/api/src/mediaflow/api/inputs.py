"""Where a job's media comes from: an uploaded `media_id`, a server path under an allow-listed root,
or a URL (refused: the gateway does not fetch URLs).

Path rules: absolute, no `..` component, and after resolving every symlink still inside one of
`settings.allowed_roots` — a link inside a root that points outside is refused like any other path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs import Media

from .problems import Problem


def path_not_allowed(detail: str) -> Problem:
    return Problem(403, "path_not_allowed", detail)


def resolve_allowed_path(raw: str, roots: list[Path]) -> Path:
    """Blocking (filesystem): the resolved path, or Problem path_not_allowed / path_not_found."""
    if not roots:
        raise path_not_allowed("server paths are disabled (no allowed roots are configured)")
    if "\x00" in raw:
        raise path_not_allowed("the path contains a NUL byte")
    candidate = Path(raw)
    if not candidate.is_absolute():
        raise path_not_allowed("the path must be absolute")
    if ".." in candidate.parts:
        raise path_not_allowed("the path must not contain '..'")
    resolved = Path(os.path.realpath(candidate))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            break
    else:
        raise path_not_allowed("the path is outside the allowed roots")
    if not resolved.is_file():
        raise Problem(404, "path_not_found", "no file at that path")
    return resolved


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

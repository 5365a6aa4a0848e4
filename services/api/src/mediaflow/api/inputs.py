"""Where a job's media comes from: an uploaded `media_id`, a server path under an allow-listed root,
or an http(s) URL.

Path rules: `mediaflow.common.storage.allowed_path`; URL rules: `mediaflow.common.fetch` (both shared
with the workers, which check again). The gateway never downloads a URL: the worker that needs the
media does, so the gateway stays small and a slow server ties up no request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mediaflow.common.fetch import check_url
from mediaflow.common.jobs.model import Media
from mediaflow.common.settings import Settings


def media_input(media: Media) -> dict[str, Any]:
    return {"media_id": media.id, "storage_key": media.key}


async def checked_url(url: str, settings: Settings) -> str:
    """The URL policy at submit (the host is resolved, hence the thread): 422 url_inputs_disabled,
    invalid_url, url_not_allowed or url_fetch_failed (the host does not resolve)."""
    return await asyncio.to_thread(check_url, url, settings)

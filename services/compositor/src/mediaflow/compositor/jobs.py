"""Job handlers of the compositor pool."""

from __future__ import annotations

import asyncio
from typing import Any

from mediaflow.common.errors import InvalidInput
from mediaflow.common.probe import probe_file
from mediaflow.common.worker import JobContext


async def probe(ctx: JobContext) -> dict[str, Any]:
    """Read media metadata with PyAV: the smallest real job, used to exercise the job system."""
    key = ctx.job.input.get("storage_key")
    if not key:
        raise InvalidInput("probe needs input.storage_key", code="invalid_input")
    await ctx.progress(0.1, "probe", "reading media")
    with ctx.storage.local_path(key) as path:
        info = await ctx.run_blocking(probe_file, path)
    delay = float(ctx.job.options.get("hold_seconds", 0))  # lets tests hold a worker mid-job
    steps = int(delay * 10)
    for i in range(steps):
        await ctx.progress((i + 1) / max(steps, 1), "hold", f"holding {i + 1}/{steps}")
        await asyncio.sleep(0.1)
    return info

"""Schemathesis hooks for test_gateway_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

A drawn `media_id` never exists, so every generated job would stop at 404 and the stateful phase
would never reach the job routes: half of the bodies that name media get a real uploaded one."""

from __future__ import annotations

import os
import random
from typing import Any

import schemathesis

MEDIA_ID = os.environ.get("MEDIAFLOW_FUZZ_MEDIA_ID", "")


def _real_media(value: Any) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("media_id"), str) and MEDIA_ID and random.random() < 0.5:
            value["media_id"] = MEDIA_ID
        for item in value.values():
            _real_media(item)
    elif isinstance(value, list):
        for item in value:
            _real_media(item)


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    _real_media(body)
    return body

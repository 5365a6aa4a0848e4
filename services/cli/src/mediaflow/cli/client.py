"""A small synchronous client of the mediaflow REST API (docs/design.md, "REST"), used by the CLI.

Errors come back as `ApiError` carrying the RFC 9457 problem's stable `code`; job events come from
the SSE stream and survive a dropped connection (reconnect with `Last-Event-ID`).
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
BATCH_ENDED = frozenset({*TERMINAL_STATES, "partial", "deleted"})


class ApiError(Exception):
    """A problem-details answer (or a transport failure, code `connection_error`)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.body = body or {}


@dataclass
class JobEvent:
    id: str
    event: str  # progress | state | log
    data: dict[str, Any]


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code") or f"http_{response.status_code}"
    message = body.get("detail") or body.get("title") or response.reason_phrase or "request failed"
    raise ApiError(response.status_code, code, message, body)


class MediaflowClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> MediaflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "connection_error", f"cannot reach {self.base_url}: {exc}") from exc
        _raise_for_problem(response)
        return response

    # ---- health -----------------------------------------------------------------------------
    def ready(self) -> bool:
        try:
            return self.http.get("/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    # ---- media ------------------------------------------------------------------------------
    def upload(self, path: Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise ApiError(0, "file_not_found", f"{path} is not a file")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as stream:
            return self._request(
                "POST",
                "/v1/media",
                files={"file": (path.name, stream, content_type)},
                timeout=httpx.Timeout(None, connect=10.0),
            ).json()

    # ---- jobs -------------------------------------------------------------------------------
    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/jobs", json=body, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(
        self, state: str | None = None, type: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        params = {
            k: v for k, v in {"state": state, "type": type, "limit": limit, "cursor": cursor}.items() if v is not None
        }
        return self._request("GET", "/v1/jobs", params=params).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/retry").json()

    def queues(self) -> dict[str, Any]:
        return self._request("GET", "/v1/queues").json()

    def search(self, query: str, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"q": query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        return self._request("GET", "/v1/search", params=params).json()

    def events(self, job_id: str, last_event_id: str = "0-0") -> Iterator[JobEvent]:
        """Every event of the job from the start (or after `last_event_id`), until it is terminal.
        A dropped stream is resumed with Last-Event-ID; a stream that ends while the job is still
        live (a gateway restart, a proxy timeout) is reopened."""

        def ended() -> bool:
            return self.job(job_id)["state"] in TERMINAL_STATES

        def last(event: JobEvent) -> bool:  # (a replayed end of an attempt that was retried since goes on)
            return event.event == "state" and event.data.get("state") in TERMINAL_STATES and ended()

        return self._follow(f"/v1/jobs/{job_id}/events", last, ended, resume_from=last_event_id)

    def _follow(
        self, path: str, last: Callable[[JobEvent], bool], ended: Callable[[], bool], resume_from: str | None = None
    ) -> Iterator[JobEvent]:
        """An SSE stream until `last(event)`; a dropped stream is reopened (with Last-Event-ID when the
        stream resumes, `resume_from` not None) until the resource has `ended()`."""
        resume, failures = resume_from, 0
        while True:
            try:
                headers = {"Last-Event-ID": resume} if resume is not None else {}
                with connect_sse(
                    self.http, "GET", path, headers=headers, timeout=httpx.Timeout(None, connect=10.0)
                ) as source:
                    _raise_for_problem(source.response)
                    for sse in source.iter_sse():
                        if sse.id and resume is not None:
                            resume = sse.id
                        if sse.event == "message" and not sse.data:
                            continue  # keep-alive
                        try:
                            data = json.loads(sse.data) if sse.data else {}
                        except ValueError:
                            data = {"message": sse.data}
                        event = JobEvent(id=sse.id, event=sse.event, data=data)
                        yield event
                        failures = 0
                        if last(event):
                            return
            except (httpx.TransportError, SSEError) as exc:
                failures += 1
                if failures > 10:
                    raise ApiError(0, "connection_error", f"lost the event stream {path}: {exc}") from exc
            if ended():  # the stream ended without its last event: the record decides
                return
            time.sleep(min(2.0, 0.2 * (failures + 1)))

    # ---- batches ----------------------------------------------------------------------------
    def submit_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/batches", json=body).json()

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/batches/{batch_id}").json()

    def batches(self, limit: int = 20) -> dict[str, Any]:
        return self._request("GET", "/v1/batches", params={"limit": limit}).json()

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/batches/{batch_id}/cancel").json()

    def retry_batch(self, batch_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/batches/{batch_id}/retry").json()

    def batch_events(self, batch_id: str) -> Iterator[JobEvent]:
        """`batch` (the whole batch first, then its totals) and `item` events until the batch has
        ended. A dropped stream is reopened: it starts again with the whole batch."""

        def last(event: JobEvent) -> bool:
            return event.event == "deleted" or (event.event == "batch" and event.data.get("state") in BATCH_ENDED)

        return self._follow(
            f"/v1/batches/{batch_id}/events", last, lambda: self.batch(batch_id)["state"] in BATCH_ENDED
        )

    def download(self, job_id: str, name: str, dest: Path) -> int:
        """Stream one artifact to `dest` (written to a temporary name, then moved into place)."""
        url_or_path = f"/v1/jobs/{job_id}/artifacts/{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", url_or_path, timeout=httpx.Timeout(None, connect=10.0)) as response:
                _raise_for_problem(response)
                size = 0
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1024 * 1024):
                        out.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(0, "connection_error", f"download of {url_or_path} failed: {exc}") from exc
        partial.replace(dest)
        return size

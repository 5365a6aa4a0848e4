"""`GET /v1/search`: the caller's transcripts, searched through the index in Redis (jobs/search.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from mediaflow.common.jobs.search import MAX_QUERY_CHARS, SearchIndex

from .auth import require_tenant
from .problems import problem_responses
from .services import Services, services

router = APIRouter(prefix="/v1/search", tags=["search"])


class SearchHit(BaseModel):
    job_id: str = Field(description="the transcribe job whose transcript holds the segment")
    start: float = Field(description="the segment's start, seconds from the start of the media")
    end: float
    speaker: str | None = Field(description="the segment's speaker, when the job diarized")
    snippet: str = Field(description="the segment's text, HTML-escaped; each matching word in <mark>…</mark>")
    media_id: str | None = Field(description="the job's uploaded input media (GET /v1/media/{id}/content)")


class SearchResults(BaseModel):
    hits: list[SearchHit]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more hits")


@router.get(
    "",
    response_model=SearchResults,
    responses=problem_responses(401, 422, 503),
    summary="Search the caller's transcripts: segments holding every word of `q`, newest transcript first",
)
async def search(
    q: str = Query(..., description=f"words to find (all of them, in one segment); up to {MAX_QUERY_CHARS} chars"),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    hits, next_cursor = await SearchIndex(svc.store).search(tenant, q, limit=limit, cursor=cursor)
    return {"hits": [hit.public() for hit in hits], "next_cursor": next_cursor}

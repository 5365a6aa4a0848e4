"""The URL policy (SSRF): which addresses count as public, how MEDIAFLOW_URL_ALLOWED_HOSTS is read,
which URLs are refused before any network use, and that secrets never reach an error message."""

from __future__ import annotations

import ipaddress

import pytest

from mediaflow.common.fetch import (
    InvalidUrl,
    UrlFetchFailed,
    UrlInputsDisabled,
    UrlNotAllowed,
    UrlPolicy,
    check_url,
    is_public,
    redacted,
    url_filename,
    url_suffix,
)
from mediaflow.common.settings import Settings

NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",  # loopback
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "fd00::1",  # private
    "169.254.169.254",
    "fe80::1",  # link-local (cloud metadata)
    "100.64.0.1",  # shared address space (CGNAT, often a cluster's pod network)
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",  # multicast
    "240.0.0.1",
    "255.255.255.255",  # reserved, broadcast
    "0.0.0.0",
    "::",  # unspecified
    "198.18.0.1",  # benchmarking
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:1::",
    "2002:a00:1::",  # 6to4 wrapping loopback / private
    "64:ff9b::7f00:1",  # NAT64 wrapping loopback
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert is_public(ipaddress.ip_address(address))


def test_allowed_hosts_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEDIAFLOW_URL_ALLOWED_HOSTS", " MinIO.internal. , 10.0.5.0/24,[::1], 127.0.0.1 ,")
    policy = UrlPolicy.from_settings(Settings())
    assert policy.enabled
    assert policy.hosts == {"minio.internal"}
    assert policy.networks == (
        ipaddress.ip_network("10.0.5.0/24"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert policy.host_listed("minio.INTERNAL.") and not policy.host_listed("evil.internal")
    assert policy.address_allowed(ipaddress.ip_address("10.0.5.7"))
    assert not policy.address_allowed(ipaddress.ip_address("10.0.6.7"))
    assert policy.address_allowed(ipaddress.ip_address("8.8.8.8"))  # public stays allowed

    monkeypatch.setenv("MEDIAFLOW_URL_INPUTS", "false")
    with pytest.raises(UrlInputsDisabled) as err:
        check_url("https://example.com/a.mp4", Settings())
    assert (err.value.code, err.value.status) == ("url_inputs_disabled", 422)


@pytest.mark.parametrize(
    ("url", "error", "code"),
    [
        ("file:///etc/passwd", UrlNotAllowed, "url_not_allowed"),
        ("ftp://example.com/a.mp4", UrlNotAllowed, "url_not_allowed"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", UrlNotAllowed, "url_not_allowed"),
        ("/relative/path.mp4", UrlNotAllowed, "url_not_allowed"),
        ("http:///no-host", InvalidUrl, "invalid_url"),
        ("http://[not-an-ip/", InvalidUrl, "invalid_url"),
        ("http://exa mple.com/", InvalidUrl, "invalid_url"),
        ("http://[zz]/", InvalidUrl, "invalid_url"),
        ("http://example.com:99999/", InvalidUrl, "invalid_url"),
        ("", InvalidUrl, "invalid_url"),
        (None, InvalidUrl, "invalid_url"),
    ],
)
def test_refused_before_any_lookup(url, error, code):
    with pytest.raises(error) as err:
        UrlPolicy.from_settings(Settings()).check_syntax(url)
    assert err.value.code == code and err.value.status == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://[::1]/",
        "http://169.254.169.254/latest/",
        "http://localhost:8000/x.mp4",
        "https://10.0.0.5/a.mp4",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
    ],
)
def test_internal_hosts_are_refused_at_submit(url):
    with pytest.raises(UrlNotAllowed) as err:
        check_url(url, Settings())
    assert err.value.code == "url_not_allowed" and "MEDIAFLOW_URL_ALLOWED_HOSTS" in err.value.message


def test_listed_hosts_pass():
    assert (
        check_url(" http://127.0.0.1:9/a.mp4 ", Settings(url_allowed_hosts=["127.0.0.0/8"]))
        == "http://127.0.0.1:9/a.mp4"
    )
    assert check_url("http://localhost/a.mp4", Settings(url_allowed_hosts=["localhost"])) == "http://localhost/a.mp4"
    with pytest.raises(UrlNotAllowed):  # a listed IP does not make other names pointing at it allowed ...
        check_url("http://localhost/a.mp4", Settings(url_allowed_hosts=["10.0.0.0/8"]))


def test_unresolvable_host():
    with pytest.raises(UrlFetchFailed) as err:
        check_url("http://no-such-host.invalid/a.mp4", Settings())
    assert err.value.code == "url_fetch_failed" and err.value.retryable


def test_messages_carry_no_secrets_and_files_get_safe_names():
    assert (
        redacted("https://user:pw@cdn.example.com:8443/v/a.mp4?X-Amz-Signature=abc")
        == "https://cdn.example.com:8443/v/a.mp4"
    )
    assert url_filename("https://cdn.example.com/v/talk.MP4?x=1") == "talk.MP4"
    assert url_filename("https://cdn.example.com/") == "input"
    assert url_suffix("https://cdn.example.com/v/talk.MP4?x=1") == ".mp4"
    assert url_suffix("https://cdn.example.com/v/a.m$4") == ""
    assert url_suffix("https://cdn.example.com/v/a.verylongsuffix") == ".verylon"

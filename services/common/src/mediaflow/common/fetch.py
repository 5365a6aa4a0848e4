"""URL inputs: the policy that keeps a tenant away from the cluster's own network (SSRF), and a bounded
download of an http(s) URL to a local file.

Policy: only `http` and `https`; every address the host resolves to must be public — loopback,
private, link-local, shared (CGNAT), multicast, reserved and unspecified addresses are refused, also
when embedded in an IPv6 address — unless the host name, the IP or a network holding it is listed in
`MEDIAFLOW_URL_ALLOWED_HOSTS`. The gateway checks when a job is submitted; the worker checks again when
it downloads, and that check is made where the connection is opened: the download connects to the very
addresses that passed (no second DNS lookup that could answer differently), and each redirect hop goes
through the same door.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import mimetypes
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpcore
import httpx

from .errors import MediaflowError
from .settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")
HOST_NAME = re.compile(r"(?i)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?")


class InvalidUrl(MediaflowError):
    status, code = 422, "invalid_url"


class UrlNotAllowed(MediaflowError):
    status, code = 422, "url_not_allowed"


class UrlInputsDisabled(MediaflowError):
    status, code = 422, "url_inputs_disabled"


class UrlFetchFailed(MediaflowError):
    """The server could not be reached or did not deliver (network error, HTTP error status, too many
    redirects). Network trouble and 5xx/429 answers are worth a retry."""

    status, code = 422, "url_fetch_failed"


class UrlTooLarge(MediaflowError):
    status, code = 413, "url_too_large"


def redacted(url: httpx.URL | str) -> str:
    """A URL for messages and logs: no user info, no query (it often carries a signature)."""
    try:
        u = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


def url_filename(url: str) -> str:
    """The last path segment of a URL ("input" when it has none)."""
    try:
        name = PurePosixPath(httpx.URL(url).path).name
    except (httpx.InvalidURL, TypeError):
        name = ""
    return name or "input"


def url_suffix(url: str) -> str:
    """A safe file extension taken from the URL's path (some containers are found by it), or ""."""
    suffix = PurePosixPath(url_filename(url)).suffix[:8].lower()
    return suffix if len(suffix) > 1 and suffix[1:].isalnum() else ""


def guess_content_type(url: str) -> str:
    return mimetypes.guess_type(url_filename(url))[0] or "application/octet-stream"


def is_public(ip: IPAddress) -> bool:
    """An address anyone on the internet could reach — never one of the cluster's own."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


@dataclass(frozen=True)
class UrlPolicy:
    enabled: bool
    hosts: frozenset[str]  # host names allowed whatever they resolve to
    networks: tuple[IPNetwork, ...]  # addresses allowed even though not public

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in settings.url_allowed_hosts:
            entry = entry.strip().lower().removeprefix("[").removesuffix("]")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(settings.url_inputs, frozenset(hosts), tuple(networks))

    def check_syntax(self, url: Any) -> httpx.URL:
        """Feature on, a well-formed absolute http(s) URL with a host. No DNS."""
        if not self.enabled:
            raise UrlInputsDisabled(
                "URL inputs are disabled on this server (MEDIAFLOW_URL_INPUTS=false): upload "
                "the media (POST /v1/media) or name a path under an allowed root"
            )
        if not isinstance(url, str) or not url.strip():
            raise InvalidUrl("the URL must be a non-empty string")
        try:
            parsed = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise InvalidUrl(f"not a valid URL: {exc}") from None
        if parsed.scheme not in SCHEMES:
            raise UrlNotAllowed(f"only http and https URLs are fetched, not {parsed.scheme or 'a relative'!s} URLs")
        if not parsed.host:
            raise InvalidUrl("the URL names no host")
        host = parsed.raw_host.decode("ascii", "replace")
        if not HOST_NAME.fullmatch(host):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise InvalidUrl(f"{host!r} is not a host name or an IP address") from None
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise InvalidUrl(f"port {parsed.port} is out of range")
        return parsed

    def host_listed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        return is_public(ip) or any(ip.version == n.version and ip in n for n in self.networks)

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of host:port, every one allowed (else UrlNotAllowed). Listed host names are
        not checked further; everything else must resolve to public (or listed) addresses only."""
        host = host.removeprefix("[").removesuffix("]")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlFetchFailed(
                f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}", retryable=True
            ) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if self.host_listed(host):
            return addresses
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is not part of the address
            if not self.address_allowed(ip):
                raise UrlNotAllowed(
                    f"host {host!r} resolves to {ip}, which is not a public address; an operator "
                    "can allow it with MEDIAFLOW_URL_ALLOWED_HOSTS"
                )
        return addresses

    def check(self, url: Any) -> str:
        """The full check the gateway makes at submit: syntax, scheme, and where the host points."""
        parsed = self.check_syntax(url)
        self.resolve(parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https" else 80))
        return str(url).strip()  # as given: re-encoding could break a signed URL


def check_url(url: Any, settings: Settings) -> str:
    """Submit-time check (blocking: it resolves the host). Returns the URL, stripped."""
    return UrlPolicy.from_settings(settings).check(url)


class _CheckedBackend(httpcore.NetworkBackend):
    """Every TCP connection of a download goes through the policy, to an address that passed it."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy, self.inner = policy, httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise UrlNotAllowed("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


# httpcore's errors as httpx's (the same names), so callers catch httpx's as with any client.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = tuple(
    (getattr(httpcore, name), getattr(httpx, name))
    for name in (
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "ConnectError",
        "ReadError",
        "WriteError",
        "RemoteProtocolError",
        "LocalProtocolError",
        "UnsupportedProtocol",
        "NetworkError",
        "TimeoutException",
        "ProtocolError",
    )
)  # most specific first


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except tuple(theirs for theirs, _ in _HTTPX_ERRORS) as exc:
        kind = next(ours for theirs, ours in _HTTPX_ERRORS if isinstance(exc, theirs))
        raise kind(str(exc)) from exc


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self.stream

    def close(self) -> None:
        if hasattr(self.stream, "close"):
            self.stream.close()


class _CheckedTransport(httpx.BaseTransport):
    """httpx over an httpcore pool whose connections all go through the policy. httpx's own transport
    takes no network backend, so this one speaks httpcore's public API directly."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=4, network_backend=_CheckedBackend(policy)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port, target=request.url.raw_path
        )
        assert isinstance(request.stream, Iterable)
        core = httpcore.Request(
            method=request.method,
            url=url,
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = self.pool.handle_request(core)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.pool.close()


def checked_client(settings: Settings, timeout: float) -> httpx.Client:
    """An HTTP client whose every connection goes through the URL policy (for outgoing calls such as
    webhooks: allowed whether or not URL inputs are), with no redirects and no proxy variables."""
    policy = dataclasses.replace(UrlPolicy.from_settings(settings), enabled=True)
    return httpx.Client(transport=_CheckedTransport(policy), timeout=timeout, follow_redirects=False, trust_env=False)


@dataclass
class Fetched:
    path: Path
    size: int
    content_type: str
    url: str  # where the body came from, after redirects (redacted)


Progress = Callable[[int, int | None], None]


def fetch_url(
    url: str, dest: Path, settings: Settings, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Fetched:
    """Download `url` into `dest` (blocking), within the policy and the limits of `settings`:
    `max_upload_bytes`, connect/read timeouts, a total time, `url_max_redirects`. On any failure `dest`
    is removed. `progress(bytes_so_far, total_or_None)` is called per chunk and may raise to stop;
    so does a set `cancel` event (UrlFetchFailed `cancelled`)."""
    policy = UrlPolicy.from_settings(settings)
    target = policy.check_syntax(url)
    timeout = httpx.Timeout(settings.url_read_timeout, connect=settings.url_connect_timeout)
    deadline = time.monotonic() + settings.url_fetch_timeout
    headers = {"User-Agent": "mediaflow", "Accept-Encoding": "identity"}
    try:
        with httpx.Client(
            transport=_CheckedTransport(policy),
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            request = client.build_request("GET", target)
            for _hop in range(settings.url_max_redirects + 1):
                response = client.send(request, stream=True)
                try:
                    if response.next_request is None:
                        return _save(response, dest, settings.max_upload_bytes, deadline, progress, cancel)
                    # a redirect: check where it leads (its addresses are checked when it connects)
                    policy.check_syntax(str(response.next_request.url))
                    request = response.next_request
                finally:
                    response.close()
            raise UrlFetchFailed(f"{redacted(url)}: more than {settings.url_max_redirects} redirects")
    except httpx.TimeoutException as exc:
        raise UrlFetchFailed(f"{redacted(url)}: timed out ({type(exc).__name__})", retryable=True) from None
    except httpx.InvalidURL as exc:
        raise InvalidUrl(f"{redacted(url)}: {exc}") from None
    except httpx.HTTPError as exc:
        raise UrlFetchFailed(f"{redacted(url)}: {type(exc).__name__}: {exc}", retryable=True) from None


def _save(
    response: httpx.Response,
    dest: Path,
    limit: int,
    deadline: float,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> Fetched:
    where = redacted(response.url)
    if not response.is_success:
        retry = response.status_code >= 500 or response.status_code in (408, 429)
        raise UrlFetchFailed(
            f"{where}: the server answered {response.status_code} {response.reason_phrase}",
            retryable=retry,
            detail={"http_status": response.status_code},
        )
    declared = response.headers.get("content-length", "")
    total = int(declared) if declared.isdigit() else None
    if total is not None and total > limit:
        raise UrlTooLarge(f"{where}: {total} bytes is more than the limit of {limit} bytes")
    size = 0
    try:
        with open(dest, "wb") as out:
            for chunk in response.iter_bytes():  # as it arrives: limits and cancel act at once
                size += len(chunk)
                if size > limit:  # a missing or lying Content-Length is caught here
                    raise UrlTooLarge(f"{where}: the body is larger than the limit of {limit} bytes")
                if time.monotonic() > deadline:
                    raise UrlFetchFailed(f"{where}: the download took too long", retryable=True)
                if cancel is not None and cancel.is_set():
                    raise UrlFetchFailed(f"{where}: download cancelled", code="cancelled")
                out.write(chunk)
                if progress is not None:
                    progress(size, total)
    except BaseException:
        dest.unlink(missing_ok=True)  # never a partial file
        raise
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
    return Fetched(dest, size, content_type or guess_content_type(str(response.url)), where)


async def fetch_url_async(
    url: str, dest: Path, settings: Settings, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Fetched:
    """`fetch_url` in a thread. If the awaiting task is cancelled, the download is told to stop and
    awaited, so no thread keeps writing into a directory that is being removed."""
    cancel = cancel or threading.Event()
    future = asyncio.get_running_loop().run_in_executor(
        None, lambda: fetch_url(url, dest, settings, progress=progress, cancel=cancel)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):  # the download's own error does not matter any more
            await future
        raise

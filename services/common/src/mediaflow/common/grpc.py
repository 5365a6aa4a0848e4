"""gRPC wiring shared by the worker processes (servers) and the gateway (clients).

Every server serves grpc.health.v1 and reflection next to its own services, and is traced.

Service-to-service security (docs/operations.md, "Service-to-service security"): a server binds
MEDIAFLOW_GRPC_BIND_HOST (loopback by default) and, when MEDIAFLOW_GRPC_TOKEN is set, answers a call
only if it carries `authorization: Bearer <token>` metadata (UNAUTHENTICATED otherwise). Health checks
stay open: Kubernetes' native gRPC probes cannot send metadata, and they reveal nothing. Reflection
needs the token like every other service. A server on a non-loopback interface without a token refuses
to start unless MEDIAFLOW_GRPC_INSECURE=true. Clients (`channel(target, token)`) attach the token to
every call.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # synchronous transcription sends small media inline
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Methods answered without a token: health checks (kubelet's gRPC probes send no metadata).
OPEN_PREFIXES = (f"/{HEALTH_SERVICE}/",)
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


class InsecureGrpcBind(RuntimeError):
    """A server would listen on a non-loopback interface without a token."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (with or without brackets) and `localhost`; false for `[::]`,
    `0.0.0.0`, "" (every interface) and any other name or address."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str, insecure: bool = False) -> None:
    """Refuse to serve gRPC on a reachable interface without authentication."""
    if token or insecure or is_loopback(host):
        return
    raise InsecureGrpcBind(
        f"refusing to serve gRPC on {host or '*'} (not a loopback interface) without a token: set "
        "MEDIAFLOW_GRPC_TOKEN (the same value on the gateway and every worker), bind to loopback with "
        "MEDIAFLOW_GRPC_BIND_HOST=127.0.0.1, or set MEDIAFLOW_GRPC_INSECURE=true if the network is "
        "otherwise protected (e.g. a service mesh with mTLS)"
    )


def _kind(handler: grpc.RpcMethodHandler | None) -> tuple[bool, bool]:
    if handler is None:
        return False, False
    return bool(handler.request_streaming), bool(handler.response_streaming)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no hints
    """Answers UNAUTHENTICATED to a call without `authorization: Bearer <token>` (constant-time
    comparison), except the methods in `open_prefixes`. An unknown method gets the same answer, so
    an unauthenticated caller cannot tell which services exist."""

    def __init__(self, token: str, open_prefixes: tuple[str, ...] = OPEN_PREFIXES) -> None:
        if not token:
            raise ValueError("an empty gRPC token authenticates nothing")
        self._expected = f"Bearer {token}".encode()
        self._open = open_prefixes

    def authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key.lower() == "authorization":
                given = value if isinstance(value, bytes) else str(value).encode()
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(self._open) or self.authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        return _denial(_kind(await continuation(handler_call_details)))


DENIED = "unauthenticated: a valid gRPC token is required"


async def _deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


async def _deny_streaming(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    # An async generator, as response-streaming behaviours are (OpenTelemetry's wrapper iterates it).
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
    yield  # never reached: abort raises


def _denial(kind: tuple[bool, bool]) -> grpc.RpcMethodHandler:
    request_streaming, response_streaming = kind
    if response_streaming:
        make = grpc.stream_stream_rpc_method_handler if request_streaming else grpc.unary_stream_rpc_method_handler
        return make(_deny_streaming)
    make = grpc.stream_unary_rpc_method_handler if request_streaming else grpc.unary_unary_rpc_method_handler
    return make(_deny)


async def start_server(
    port: int,
    services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    host: str = "127.0.0.1",
    token: str = "",
    insecure: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server on `host:port` (0 = any free port). `services` holds
    (add_XServicer_to_server, servicer, full service name). With a `token`, every call but health
    checks must carry it; a non-loopback `host` without one raises InsecureGrpcBind unless
    `insecure`. Returns (server, bound port)."""
    check_bind(host, token, insecure)
    interceptors: list[grpc.aio.ServerInterceptor] = [
        aio_server_interceptor()  # type: ignore[no-untyped-call]  # OpenTelemetry ships no hints
    ]
    if token:  # after tracing: a refused call still makes a span, with status UNAUTHENTICATED
        interceptors.append(TokenAuthInterceptor(token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [HEALTH_SERVICE, reflection.SERVICE_NAME]
    for add, servicer, name in services:
        add(servicer, server)
        names.append(name)
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for _add, _servicer, name in services:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


class _AddToken:
    """Adds `authorization: Bearer <token>` to a call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# One class per call kind: a channel files each interceptor under the first kind it is an instance of.
# (grpc ships no type hints: its bases are Any to mypy.)
class _UnaryUnaryToken(_AddToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamToken(_AddToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnaryToken(_AddToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamToken(_AddToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that send `token` on every kind of call."""
    kinds = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    return [kind(token) for kind in kinds]


def channel(target: str, token: str = "") -> grpc.aio.Channel:
    """A traced channel to `target`; with a `token`, every call carries it (MEDIAFLOW_GRPC_TOKEN)."""
    interceptors: list[grpc.aio.ClientInterceptor] = list(
        aio_client_interceptors()  # type: ignore[no-untyped-call]  # OpenTelemetry ships no hints
    )
    if token:
        interceptors += token_interceptors(token)
    return grpc.aio.insecure_channel(
        target,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )

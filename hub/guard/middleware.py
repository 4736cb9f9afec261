"""HTTP-level limits on the main port: bad signatures per address and slow request bodies.

Each refusal is the protocol's answer (Pusher's JSON error body with 408 or 429) and is counted in
``hub_limit_refusals_total{limit}``. The per-address limit keys on the peer address the node sees:
behind a load balancer, the balancer's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from hub.guard.connections import ConnectionGuard
from hub.guard.windows import PerSecond

# Where the API handler finds how long it may wait for a body (it reads the body; the middleware cannot
# without taking over its errors).
BODY_TIMEOUT = "hub.body_timeout"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RequestLimits:
    """The bad-signature limit per address and the time a request body may take to arrive."""

    request_timeout: float
    max_bad_signatures_per_second: int


def _refusal(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status)


def _is_api(path: str) -> bool:
    return "/apps/" in path or "/users/" in path


def guard_middleware(guard: ConnectionGuard, limits: RequestLimits) -> Middleware:
    """The main port's middleware: bad signatures per address, the body timeout, WebSocket hand-overs."""
    bad_signatures = PerSecond(limits.max_bad_signatures_per_second)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "/app/" in request.path:
            # An upgrade the front door left to aiohttp: the ws node takes the transport over.
            guard.websocket(request.transport)
            return await handler(request)
        if not _is_api(request.path):
            return await handler(request)
        peer = request.remote or ""
        if bad_signatures.exceeded(peer, time.monotonic()):
            guard.refused("bad_signatures")
            limit = limits.max_bad_signatures_per_second
            return _refusal(429, f"Too many requests with bad signatures: {limit} a second are allowed.")
        request[BODY_TIMEOUT] = limits.request_timeout
        response = await handler(request)
        if response.status == 401:
            bad_signatures.add(peer, time.monotonic())
        elif response.status == 408:
            guard.refused("request_timeout")
            response.force_close()
        return response

    return middleware

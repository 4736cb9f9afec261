"""CORS for the HTTP port, so browser tools and pages can call the API and the health checks.

Soketi answers ``Access-Control-Allow-Origin: *`` by default; so does hub (``--cors-origins``). With a
list of origins, a listed request ``Origin`` is echoed back (browsers accept one origin per answer, not
a list). Preflight ``OPTIONS`` requests are answered here, before routing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = "GET, POST, OPTIONS"
# What browser clients of Pusher-style APIs send: Laravel's CSRF and socket-id headers among them.
ALLOWED_HEADERS = (
    "Origin, Content-Type, Accept, Authorization, X-Requested-With, X-Auth-Token, X-CSRF-TOKEN, XSRF-TOKEN, X-Socket-Id"
)
PREFLIGHT_MAX_AGE = "600"


def parse_origins(raw: str) -> frozenset[str] | None:
    """The allowed origins of ``--cors-origins``; ``{"*"}`` for any, None when CORS is off."""
    origins = frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if not origins:
        return None
    return frozenset({"*"}) if "*" in origins else origins


def _allowed_origin(origins: frozenset[str], request: web.Request) -> str | None:
    if "*" in origins:
        return "*"
    origin = request.headers.get("Origin")
    return origin if origin in origins else None


def cors_middleware(raw_origins: str) -> Middleware | None:
    """An aiohttp middleware adding CORS headers for ``raw_origins``, or None when CORS is off."""
    origins = parse_origins(raw_origins)
    if origins is None:
        return None

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = _allowed_origin(origins, request)
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight:
            response: web.StreamResponse = web.Response(status=204)
            if allowed is not None:
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            response = await handler(request)
        # A WebSocket answer is already sent by now; its headers cannot change (and need no CORS).
        if not response.prepared:
            if allowed is not None:
                response.headers["Access-Control-Allow-Origin"] = allowed
            if "*" not in origins:
                response.headers["Vary"] = "Origin"
        return response

    return cors

"""The admin HTTP application: bearer-token authentication, JSON errors, and pluggable routes.

It runs on ``--admin-port`` only when an admin token is configured (``--admin-token``,
``HUB_ADMIN_TOKEN`` or ``--admin-token-file``). Every request must carry ``Authorization: Bearer
<token>``, compared in constant time, except paths a registrar declares public (a login page, static
files). Errors are ``{"error": message, "code": status}``; a 400 about one input also names it in
``"field"``.

Routes come from registrars: functions ``register(app, ctx)`` that add routes to the aiohttp
application and may read ``ctx`` (the node's settings, apps, state, broker, ...). A registrar that
serves pages to a browser appends their path prefixes to ``app[PUBLIC_PREFIXES]`` and checks
credentials itself (``app[ADMIN_AUTH].verify(...)``, e.g. for a login form).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.apps import AppRegistry
from hub.appstore.base import AppStore
from hub.broker.base import Broker
from hub.config import Settings
from hub.metrics import Metrics
from hub.state.base import ClusterState
from hub.state.node_stats import NodeStatsBoard
from hub.tap import Tap
from hub.webhooks.queue import WebhookQueue

if TYPE_CHECKING:
    from hub.ws.node import WsNode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminAuth:
    """The admin token and its constant-time check."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def verify(self, presented: str) -> bool:
        """Whether ``presented`` is the admin token (constant time, whatever the lengths)."""
        return hmac.compare_digest(presented.encode(), self._token)


@dataclass
class AdminContext:
    """What admin routes may read or act on: the node's parts (``ws`` is None on an ingest node)."""

    settings: Settings
    metrics: Metrics
    store: AppStore
    apps: AppRegistry
    broker: Broker
    state: ClusterState
    webhook_queue: WebhookQueue
    ws: WsNode | None = None
    tap: Tap | None = None
    node_stats: NodeStatsBoard | None = None


RouteRegistrar = Callable[[web.Application, AdminContext], None]
"""Adds a feature's routes to the admin application."""

ADMIN_AUTH = web.AppKey("admin_auth", AdminAuth)
ADMIN_CONTEXT = web.AppKey("admin_context", AdminContext)
PUBLIC_PREFIXES = web.AppKey("admin_public_prefixes", list[str])


class AdminError(Exception):
    """An admin request that cannot be served: HTTP status, message and, for a 400, the field at fault."""

    def __init__(
        self, status: int, message: str, field: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON answer."""
        body: dict[str, Any] = {"error": self.message, "code": self.status}
        if self.field is not None:
            body["field"] = self.field
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="hub-admin"'
        return web.json_response(body, status=self.status, headers=headers)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; AdminError 400 when it is not one."""
    raw = await request.read()
    try:
        doc = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        raise AdminError(400, "The request body is not valid JSON.", "body") from None
    if not isinstance(doc, dict):
        raise AdminError(400, "The request body must be a JSON object.", "body")
    return doc


def _is_public(request: web.Request) -> bool:
    return any(request.path.startswith(prefix) for prefix in request.app[PUBLIC_PREFIXES])


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_public(request):
        presented = bearer_token(request)
        if presented is None:
            raise AdminError(401, "Send the admin token as 'Authorization: Bearer <token>'.")
        if not request.app[ADMIN_AUTH].verify(presented):
            raise AdminError(401, "The admin token is wrong.")
    return await handler(request)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AdminError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            error = AdminError(405, f"Method {request.method} is not allowed on {request.path}; use {allowed}.")
            response = error.response()
            response.headers["Allow"] = exc.headers.get("Allow", allowed)
            return response
        if isinstance(exc, web.HTTPNotFound):
            return AdminError(404, f"No admin endpoint at {request.path}.").response()
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return AdminError(413, "The request body is too large.").response()
        return AdminError(exc.status, exc.text or exc.reason).response()


# Apps are small documents; nothing on the admin port needs a bigger body.
MAX_BODY_BYTES = 1024 * 1024


def build_admin_app(token: str, ctx: AdminContext, registrars: Sequence[RouteRegistrar]) -> web.Application:
    """The admin application: authentication and JSON errors around every registrar's routes."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors, _authenticate])
    app[ADMIN_AUTH] = AdminAuth(token)
    app[ADMIN_CONTEXT] = ctx
    app[PUBLIC_PREFIXES] = []
    for register in registrars:
        register(app, ctx)
    return app

"""Turning an HTTP request into a verified (app, body) pair, and errors into Pusher's JSON answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

from hub.apps import App, AppRegistry
from hub.guard.middleware import BODY_TIMEOUT
from hub.protocol.errors import ApiError
from hub.protocol.signatures import verify_api_request


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose app exists and whose signature checked out."""

    app: App
    body: bytes


def error_response(error: ApiError) -> web.Response:
    """Pusher's status code with a JSON body that says what is wrong (429 also says when to retry)."""
    headers = {"Retry-After": "1"} if error.status == 429 else None
    return web.json_response(error.body(), status=error.status, headers=headers)


async def verify(request: web.Request, apps: AppRegistry, max_body_bytes: int) -> VerifiedRequest:
    """Find the app, read the body within ``max_body_bytes`` and check the signature; raise ApiError otherwise."""
    app_id = request.match_info.get("app_id")
    if app_id is None:
        # pusher-http-python posts terminate_connections to /users/{id}/... with no app id in the path.
        app = apps.by_key(request.query.get("auth_key", ""))
        if app is None:
            raise ApiError(401, "auth_key does not match any app.")
    else:
        app = apps.by_id(app_id)
        if app is None:
            raise ApiError(404, f"The app {app_id} could not be found.")
    too_large = f"Request body is larger than {max_body_bytes} bytes (--max-http-body-kb)."
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise ApiError(413, too_large)
    try:
        async with asyncio.timeout(request.get(BODY_TIMEOUT)):
            body = await request.read()
    except TimeoutError:
        raise ApiError(408, "The request body took too long to arrive.") from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, too_large) from None
    except web.RequestPayloadError as exc:
        # e.g. a Content-Encoding: gzip header over a body that is not gzip
        raise ApiError(400, f"Request body could not be read: {exc}.") from None
    verify_api_request(
        method=request.method,
        path=request.path,
        params=list(request.query.items()),
        body=body,
        key=app.key,
        secret=app.secret,
        now=time.time(),
    )
    if not app.enabled:
        raise ApiError(403, "The app is not enabled.")
    return VerifiedRequest(app=app, body=body)

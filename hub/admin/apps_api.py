"""The apps endpoints of the admin API: list, get, create, update, disable/enable and delete apps.

Reads come from this node's registry (what it serves now). Writes go to the app store, which puts
them in this node's registry before answering and reaches every other node within a second; a
read-only store (the apps file, the environment) answers writes with 405.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from hub.admin.server import ADMIN_CONTEXT, AdminContext, AdminError, read_json_object
from hub.apps import App, AppFieldError, ConfigError, app_from_mapping, app_to_mapping
from hub.appstore.base import AppConflict, AppStore, AppStoreError, ReadOnlyStore


def _store(request: web.Request) -> AppStore:
    return request.app[ADMIN_CONTEXT].store


def _current(request: web.Request) -> App:
    app_id = request.match_info["app_id"]
    app = _store(request).apps.by_id(app_id)
    if app is None:
        raise AdminError(404, f"The app {app_id} could not be found.")
    return app


def _app(doc: dict[str, Any]) -> App:
    try:
        return app_from_mapping(doc)
    except AppFieldError as exc:
        raise AdminError(400, str(exc), exc.field) from None
    except ConfigError as exc:
        raise AdminError(400, str(exc)) from None


def _refused(exc: AppStoreError) -> AdminError:
    if isinstance(exc, ReadOnlyStore):
        return AdminError(405, str(exc), headers={"Allow": "GET"})
    return AdminError(exc.status, str(exc), exc.field if isinstance(exc, AppConflict) else None)


def _answer(app: App, status: int = 200) -> web.Response:
    return web.json_response(app_to_mapping(app), status=status)


async def _list(request: web.Request) -> web.Response:
    store = _store(request)
    apps = [app_to_mapping(app) for app in sorted(store.apps, key=lambda a: a.id)]
    return web.json_response({"apps": apps, "store": store.name, "writable": store.writable})


async def _get(request: web.Request) -> web.Response:
    return _answer(_current(request))


async def _create(request: web.Request) -> web.Response:
    doc = await read_json_object(request)
    # Made up when not given: a numeric id (the Python SDK accepts no other) and random credentials.
    doc.setdefault("id", str(secrets.randbelow(9 * 10**9) + 10**9))
    doc.setdefault("key", secrets.token_hex(10))
    doc.setdefault("secret", secrets.token_hex(20))
    app = _app(doc)
    try:
        await _store(request).create(app)
    except AppStoreError as exc:
        raise _refused(exc) from None
    return _answer(app, 201)


async def _update(request: web.Request, changes: dict[str, Any]) -> web.Response:
    current = _current(request)
    if "id" in changes and changes["id"] != current.id:
        raise AdminError(400, "An app's id cannot change; create a new app instead.", "id")
    app = _app({**app_to_mapping(current), **changes})
    try:
        await _store(request).update(app)
    except AppStoreError as exc:
        raise _refused(exc) from None
    return _answer(app)


async def _patch(request: web.Request) -> web.Response:
    return await _update(request, await read_json_object(request))


async def _disable(request: web.Request) -> web.Response:
    return await _update(request, {"enabled": False})


async def _enable(request: web.Request) -> web.Response:
    return await _update(request, {"enabled": True})


async def _delete(request: web.Request) -> web.Response:
    current = _current(request)
    try:
        await _store(request).delete(current.id)
    except AppStoreError as exc:
        raise _refused(exc) from None
    return web.Response(status=204)


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the apps endpoints."""
    app.router.add_get("/api/apps", _list)
    app.router.add_post("/api/apps", _create)
    app.router.add_get("/api/apps/{app_id}", _get)
    app.router.add_patch("/api/apps/{app_id}", _patch)
    app.router.add_delete("/api/apps/{app_id}", _delete)
    app.router.add_post("/api/apps/{app_id}/disable", _disable)
    app.router.add_post("/api/apps/{app_id}/enable", _enable)

"""The apps endpoints of the admin API: ``/api/apps`` and ``/api/apps/{id}``."""

from __future__ import annotations

from aiohttp import web

from hub.admin.server import ADMIN_CONTEXT, AdminContext, AdminError
from hub.apps import app_to_mapping


async def _list(request: web.Request) -> web.Response:
    apps = request.app[ADMIN_CONTEXT].apps
    return web.json_response({"apps": [app_to_mapping(app) for app in sorted(apps, key=lambda a: a.id)]})


async def _get(request: web.Request) -> web.Response:
    app_id = request.match_info["app_id"]
    app = request.app[ADMIN_CONTEXT].apps.by_id(app_id)
    if app is None:
        raise AdminError(404, f"The app {app_id} could not be found.")
    return web.json_response(app_to_mapping(app))


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the apps endpoints."""
    app.router.add_get("/api/apps", _list)
    app.router.add_get("/api/apps/{app_id}", _get)

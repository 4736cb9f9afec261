"""The admin application: bearer-token check, JSON errors, registrars and public prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.admin.routes import REGISTRARS
from hub.admin.server import (
    PUBLIC_PREFIXES,
    AdminContext,
    AdminError,
    RouteRegistrar,
    build_admin_app,
    read_json_object,
)
from hub.apps import App
from hub.appstore.static import StaticAppStore
from hub.config import parse_settings
from hub.metrics import Metrics
from hub.server import make_backends

TOKEN = "a-very-long-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Client = TestClient[web.Request, web.Application]


def _context() -> AdminContext:
    settings = parse_settings(["serve"], {})
    metrics = Metrics()
    backends = make_backends(settings, metrics)
    store = StaticAppStore([App(id="1", key="app-key", secret="app-secret")])
    store.apps.replace([App(id="1", key="app-key", secret="app-secret")])
    return AdminContext(settings, metrics, store, store.apps, backends.broker, backends.state, backends.webhook_queue)


def _echo_registrar(app: web.Application, ctx: AdminContext) -> None:
    async def echo(request: web.Request) -> web.Response:
        doc = await read_json_object(request)
        if "name" not in doc:
            raise AdminError(400, "name is required.", "name")
        return web.json_response(doc)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="login")

    app.router.add_post("/api/echo", echo)
    app.router.add_get("/login", page)
    app[PUBLIC_PREFIXES].append("/login")


async def _client(registrars: Sequence[RouteRegistrar]) -> Client:
    client = TestClient(TestServer(build_admin_app(TOKEN, _context(), registrars)))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    client = await _client([*REGISTRARS, _echo_registrar])
    yield client
    await client.close()


async def test_request_without_token_is_refused_with_401_and_a_bearer_challenge(client: Client) -> None:
    response = await client.get("/api/apps")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["code"] == 401 and "Bearer" in body["error"]


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer "])
async def test_request_with_a_wrong_token_is_refused(client: Client, header: str) -> None:
    response = await client.get("/api/apps", headers={"Authorization": header})
    assert response.status == 401
    assert (await response.json())["code"] == 401


async def test_request_with_the_token_is_served(client: Client) -> None:
    response = await client.get("/api/apps", headers=AUTH)
    assert response.status == 200
    assert [app["id"] for app in (await response.json())["apps"]] == ["1"]


async def test_unknown_path_is_401_without_token_so_routes_stay_hidden(client: Client) -> None:
    assert (await client.get("/nothing-here")).status == 401


async def test_unknown_path_with_token_is_a_json_404(client: Client) -> None:
    response = await client.get("/nothing-here", headers=AUTH)
    assert response.status == 404
    assert await response.json() == {"error": "No admin endpoint at /nothing-here.", "code": 404}


async def test_wrong_method_is_a_json_405_naming_the_allowed_ones(client: Client) -> None:
    response = await client.patch("/api/echo", headers=AUTH)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["code"] == 405


async def test_body_that_is_not_json_is_a_400_naming_the_body(client: Client) -> None:
    response = await client.post("/api/echo", data=b"{nope", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["field"] == "body"


async def test_admin_error_names_the_field(client: Client) -> None:
    response = await client.post("/api/echo", json={"other": 1}, headers=AUTH)
    assert await response.json() == {"error": "name is required.", "code": 400, "field": "name"}


async def test_public_prefix_is_served_without_token(client: Client) -> None:
    response = await client.get("/login")
    assert response.status == 200
    assert await response.text() == "login"


async def test_unknown_app_is_a_json_404(client: Client) -> None:
    response = await client.get("/api/apps/nope", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["code"] == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/apps"), ("PATCH", "/api/apps/1"), ("DELETE", "/api/apps/1"), ("POST", "/api/apps/1/disable")],
)
async def test_writes_to_a_read_only_store_are_405_allowing_get(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path, json={"enabled": False}, headers=AUTH)
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    assert "read-only" in (await response.json())["error"]


async def test_list_says_which_store_serves_the_apps(client: Client) -> None:
    body = await (await client.get("/api/apps", headers=AUTH)).json()
    assert (body["store"], body["writable"]) == ("env", False)

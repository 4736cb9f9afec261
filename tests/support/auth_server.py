"""A real channel-authorization and user-authentication endpoint for the JS clients under test.

Signatures come from the official `pusher` Python SDK (`Pusher.authenticate` / `authenticate_user`), not
from our own code, so the server is checked against what a real backend produces. pusher-js POSTs
`socket_id` (and `channel_name` for channels) as form fields, plus whatever the test put in
`channelAuthorization.params` / `userAuthentication.params`. This endpoint understands these extras:

- `user_id`: presence member id / signed-in user id (required for presence channels and sign-in).
- `user_info`: JSON object for presence `user_info` and sign-in `user_info`.
- `watchlist`: JSON array of user ids for sign-in.
- `user_id_is_number=1`: send `user_id` as a JSON number in presence channel_data (Pusher's own examples do),
  and sign-in `user_data` with a numeric `id`, as Laravel signs `$user->id` (the Python SDK refuses a numeric
  id, so that one is signed with the SDK's own `sign` over the string the PHP SDK signs).
- `deny`: `1`/`all` refuses every request with 403; otherwise a comma-separated list of channel names
  (and/or `signin`) to refuse.
- `deny_status`: HTTP status used when refusing (default 403).
- `tamper=1`: corrupt the signature after signing, to test that the hub rejects bad auth.
- `omit_channel_data=1`: answer a presence request with a private-style signature and no channel_data
  (valid for signed-in users, see protocol.md 1.8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pusher
from aiohttp import web
from pusher.signature import sign

from tests.support.ports import LOOPBACK

DEFAULT_APP_ID = "1"  # the pusher SDK only accepts numeric app ids
DEFAULT_KEY = "app-key"
DEFAULT_SECRET = "app-secret"


@dataclass(frozen=True)
class AuthRequest:
    """One request the endpoint answered, kept so tests can assert on what the client sent."""

    kind: str  # "channel" or "user"
    params: dict[str, str]
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _tamper(auth: str) -> str:
    """Flip the last hex digit of `key:signature` so the signature no longer verifies."""
    key, _, signature = auth.rpartition(":")
    last = "0" if signature[-1:] != "0" else "1"
    return f"{key}:{signature[:-1]}{last}"


def _json_param(params: dict[str, str], name: str) -> Any:
    """Decode a JSON-valued form field; a value that is not JSON is used as the plain string."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _denied(params: dict[str, str], target: str) -> bool:
    deny = params.get("deny", "").strip()
    if deny.lower() in {"1", "true", "all"}:
        return True
    return target in {item.strip() for item in deny.split(",") if item.strip()}


class AuthServer:
    """aiohttp server on a free loopback port answering pusher-js auth requests with SDK-made signatures."""

    def __init__(
        self,
        *,
        app_id: str = DEFAULT_APP_ID,
        key: str = DEFAULT_KEY,
        secret: str = DEFAULT_SECRET,
        host: str = LOOPBACK,
        port: int = 0,
        encryption_master_key_base64: str | None = None,
    ) -> None:
        """Configure the app credentials used to sign; `port=0` lets the OS pick a free port."""
        self.key = key
        self._secret = secret
        self.host = host
        self._requested_port = port
        self._sdk = pusher.Pusher(
            app_id=app_id,
            key=key,
            secret=secret,
            ssl=False,
            host=host,
            encryption_master_key_base64=encryption_master_key_base64,
        )
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[AuthRequest] = []

    @property
    def base_url(self) -> str:
        """http://host:port of the running server."""
        if not self.port:
            raise RuntimeError("AuthServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def channel_auth_url(self) -> str:
        """Endpoint for pusher-js `channelAuthorization.endpoint` / Echo `authEndpoint`."""
        return f"{self.base_url}/auth"

    @property
    def user_auth_url(self) -> str:
        """Endpoint for pusher-js `userAuthentication.endpoint`."""
        return f"{self.base_url}/user-auth"

    def requests_for(self, kind: str) -> list[AuthRequest]:
        """Answered requests of one kind ("channel" or "user"), oldest first."""
        return [request for request in self.requests if request.kind == kind]

    async def start(self) -> Self:
        """Bind and start serving."""
        app = web.Application()
        app.router.add_post("/auth", self._channel_auth)
        app.router.add_post("/broadcasting/auth", self._channel_auth)  # Laravel's path, for Echo defaults
        app.router.add_post("/user-auth", self._user_auth)
        app.router.add_post("/broadcasting/user-auth", self._user_auth)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        # Port 0 was resolved by the kernel; read back the real one.
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start on entering `async with`."""
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop on leaving `async with`."""
        await self.close()

    def _answer(self, kind: str, params: dict[str, str], status: int, body: dict[str, Any]) -> web.Response:
        self.requests.append(AuthRequest(kind=kind, params=params, status=status, body=body))
        return web.json_response(body, status=status)

    async def _channel_auth(self, request: web.Request) -> web.Response:
        params = {key: str(value) for key, value in (await request.post()).items()}
        channel = params.get("channel_name", "")
        socket_id = params.get("socket_id", "")
        if _denied(params, channel):
            return self._answer("channel", params, int(params.get("deny_status", "403")), {"error": "denied"})
        custom_data: dict[str, Any] | None = None
        if channel.startswith("presence-") and params.get("omit_channel_data") != "1":
            user_id = params.get("user_id")
            if not user_id:
                return self._answer("channel", params, 400, {"error": "presence auth needs a user_id param"})
            custom_data = {"user_id": int(user_id) if params.get("user_id_is_number") == "1" else user_id}
            user_info = _json_param(params, "user_info")
            if user_info is not None:
                custom_data["user_info"] = user_info
        try:
            body: dict[str, Any] = dict(
                self._sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=custom_data)
            )
        except ValueError as err:
            return self._answer("channel", params, 400, {"error": str(err)})
        if isinstance(body.get("shared_secret"), bytes):
            # The SDK returns the encrypted-channel secret as base64 bytes; JSON needs text.
            body["shared_secret"] = body["shared_secret"].decode("ascii")
        if params.get("tamper") == "1":
            body["auth"] = _tamper(body["auth"])
        return self._answer("channel", params, 200, body)

    async def _user_auth(self, request: web.Request) -> web.Response:
        params = {key: str(value) for key, value in (await request.post()).items()}
        if _denied(params, "signin"):
            return self._answer("user", params, int(params.get("deny_status", "403")), {"error": "denied"})
        user_id = params.get("user_id")
        if not user_id:
            return self._answer("user", params, 400, {"error": "sign-in needs a user_id param"})
        user_data: dict[str, Any] = {"id": user_id}
        user_info = _json_param(params, "user_info")
        if user_info is not None:
            user_data["user_info"] = user_info
        watchlist = _json_param(params, "watchlist")
        if watchlist is not None:
            user_data["watchlist"] = watchlist
        if params.get("user_id_is_number") == "1":
            user_data["id"] = int(user_id)
            encoded = json.dumps(user_data)
            signature = sign(self._secret, f"{params.get('socket_id', '')}::user::{encoded}")
            return self._answer("user", params, 200, {"auth": f"{self.key}:{signature}", "user_data": encoded})
        try:
            body: dict[str, Any] = dict(self._sdk.authenticate_user(params.get("socket_id", ""), user_data))
        except ValueError as err:
            return self._answer("user", params, 400, {"error": str(err)})
        if params.get("tamper") == "1":
            body["auth"] = _tamper(body["auth"])
        return self._answer("user", params, 200, body)

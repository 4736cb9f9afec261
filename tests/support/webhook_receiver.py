"""A real HTTP webhook receiver: records every request the hub makes and checks it as a Pusher backend would.

The receiver is an aiohttp server on a free loopback port, running its own event loop in a background
thread, so one receiver can outlive the function-scoped event loops of the tests that use it (its URL
must be in the apps file before the hub starts). Every request is recorded with what was answered;
signatures are checked with the official `pusher` SDK's ``validate_webhook`` (which also rejects a
``time_ms`` more than 300 s away from now).

    receiver = WebhookReceiver({"hooks-key": ("21", "hooks-secret")}).start()
    receiver.url("/main")                 # put this in the app's webhooks
    receiver.fail_next(2, path="/main")   # answer 500 twice, then 200 again
    receiver.down(); receiver.up()        # stop listening (connection refused), listen again on the same port
    await receiver.wait_for_events(1, path="/main", name="channel_occupied", channel="x")
    receiver.close()
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pusher
from aiohttp import web

from tests.support.matching import fields_match
from tests.support.ports import LOOPBACK, free_port

_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class WebhookRequest:
    """One request the hub made, and what the receiver answered."""

    received_at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    payload: dict[str, Any] | None  # what `validate_webhook` returned: None when the signature (or time) is bad

    @property
    def valid(self) -> bool:
        """Whether the signature and `time_ms` verified with the app's secret."""
        return self.payload is not None

    @property
    def accepted(self) -> bool:
        """Whether the receiver answered 2xx (the hub must not send it again)."""
        return 200 <= self.status < 300

    @property
    def events(self) -> list[dict[str, Any]]:
        """The request's `events`, as verified (empty when the signature did not verify)."""
        return list((self.payload or {}).get("events") or [])


@dataclass(frozen=True)
class ReceivedEvent:
    """One element of a delivered request's `events`, with the request that carried it."""

    request: WebhookRequest
    event: dict[str, Any]

    @property
    def name(self) -> str:
        """The webhook event name (`channel_occupied`, ...)."""
        return str(self.event.get("name"))


@dataclass
class _Failures:
    remaining: int
    status: int
    path: str | None = None


@dataclass
class _State:
    requests: list[WebhookRequest] = field(default_factory=list)
    failures: list[_Failures] = field(default_factory=list)


class WebhookReceiver:
    """The app backend's webhook endpoint; `credentials` maps each app key to its (app id, secret)."""

    def __init__(self, credentials: Mapping[str, tuple[str, str]], *, port: int | None = None) -> None:
        """Describe the receiver; nothing listens until `start()`."""
        self.port = port or free_port()
        self._sdks = {
            key: pusher.Pusher(app_id=app_id, key=key, secret=secret) for key, (app_id, secret) in credentials.items()
        }
        self._lock = threading.Lock()
        self._state = _State()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """The URL of `path` on this receiver (give each app or test its own path)."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def start(self) -> Self:
        """Start the loop thread and listen."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        self.up()
        return self

    def close(self) -> None:
        """Stop listening and stop the loop thread."""
        loop = self._loop
        if loop is None:
            return
        self._call(self._stop_site())
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()
        self._loop = None

    def down(self) -> None:
        """Stop listening: the hub's requests are refused, like a backend that is down."""
        self._call(self._stop_site())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._start_site())

    def __enter__(self) -> Self:
        """Start on entering a `with` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop on leaving the block."""
        self.close()

    # --- behaviour -----------------------------------------------------------------------------------

    def fail_next(self, count: int, *, status: int = 500, path: str | None = None) -> None:
        """Answer the next `count` requests (to `path`, or to any path) with `status` before 200 again."""
        with self._lock:
            self._state.failures.append(_Failures(count, status, path))

    # --- records -------------------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[WebhookRequest]:
        """Every request so far (failed attempts included), oldest first."""
        with self._lock:
            return [r for r in self._state.requests if path is None or r.path == path]

    def events(self, *, path: str | None = None, **fields: Any) -> list[ReceivedEvent]:
        """Events of accepted (2xx) requests whose fields equal `fields` (callables are predicates)."""
        found = []
        for request in self.requests(path):
            if not request.accepted:
                continue
            for event in request.events:
                if fields_match(event.get, fields):
                    found.append(ReceivedEvent(request, event))
        return found

    async def wait_for_events(
        self, count: int, *, timeout: float = 10.0, path: str | None = None, **fields: Any
    ) -> list[ReceivedEvent]:
        """Wait until at least `count` matching events were delivered; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(path=path, **fields)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(found)} of {count} webhook events matching {fields} (path {path}) within {timeout} s; "
                    f"received:\n{self.describe(path)}"
                )
            await asyncio.sleep(_POLL_SECONDS)

    async def expect_no_events(self, *, within: float, path: str | None = None, **fields: Any) -> None:
        """Assert that no matching event is delivered (already, or within `within` seconds)."""
        deadline = time.monotonic() + within
        while True:
            found = self.events(path=path, **fields)
            if found:
                raise AssertionError(f"unexpected webhook events matching {fields}: {[f.event for f in found]}")
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(_POLL_SECONDS)

    async def expect_exactly(
        self, count: int, *, within: float, path: str | None = None, **fields: Any
    ) -> list[ReceivedEvent]:
        """Assert that `count` matching events are delivered and no more arrive within `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            found = self.events(path=path, **fields)
            if len(found) > count or (len(found) < count and time.monotonic() >= deadline):
                raise AssertionError(
                    f"{len(found)} webhook events matching {fields} (path {path}), expected exactly {count}; "
                    f"received:\n{self.describe(path)}"
                )
            if time.monotonic() >= deadline:
                return found
            await asyncio.sleep(_POLL_SECONDS)

    def describe(self, path: str | None = None, count: int = 30) -> str:
        """The latest requests, one line each, for failure messages."""
        lines = [
            f"  {r.path} {r.status} valid={r.valid} {r.body[:300].decode('utf-8', 'replace')}"
            for r in self.requests(path)[-count:]
        ]
        return "\n".join(lines) or "  (none)"

    # --- server ----------------------------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "receiver not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start_site(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, self.port, reuse_address=True).start()
        self._runner = runner

    async def _stop_site(self) -> None:
        # The whole runner goes: stopping only the listening socket would keep serving the hub's pooled
        # keep-alive connections, which is not what a backend that is down does.
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _answer_status(self, path: str) -> int:
        with self._lock:
            for failure in self._state.failures:
                if failure.remaining > 0 and (failure.path is None or failure.path == path):
                    failure.remaining -= 1
                    return failure.status
        return 200

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        status = self._answer_status(request.path)
        key = request.headers.get("X-Pusher-Key", "")
        signature = request.headers.get("X-Pusher-Signature", "")
        sdk = self._sdks.get(key)
        payload = None
        if sdk is not None and request.headers.get("Content-Type") == "application/json":
            try:
                payload = sdk.validate_webhook(key, signature, body)
            except (ValueError, TypeError):
                payload = None
        if payload is None and status == 200:
            status = 401  # an unverifiable webhook is refused, as a backend using the SDK would
        record = WebhookRequest(time.time(), request.path, headers, body, status, payload)
        with self._lock:
            self._state.requests.append(record)
        return web.json_response({"ok": 200 <= status < 300}, status=status)

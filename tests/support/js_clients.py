"""Drive REAL pusher-js and Laravel Echo clients (tests/js/driver.mjs) from async Python tests.

One `node tests/js/driver.mjs` process hosts any number of clients, each named by a test-chosen id
(`cid`). Requests and replies are JSON lines on the driver's stdin/stdout; everything a client observes
streams back unsolicited as a `JsRecord`, kept per client for `events()` / `wait_for()`.

Record sources (`JsRecord.source`):

- ``connection``: ``state_change`` (data ``{"previous", "current"}``) and ``error`` (pusher-js's error
  object, e.g. ``{"type": "PusherError", "data": {"code": 4009, "message": ...}}``).
- ``message``: every frame the server sent, as pusher-js decoded it (``data`` JSON-parsed when it was a
  JSON string), with the frame's top-level ``user_id``. The only place client events show ``user_id``.
- ``channel``: what ``channel.bind_global`` sees: app events plus ``pusher:subscription_succeeded``
  (presence: members snapshot), ``pusher:subscription_error``, ``pusher:member_added``/``_removed``
  (``{"id", "info"}``), ``pusher:subscription_count``.
- ``transport``: ``closed`` with ``{"code", "reason", "wasClean"}`` for every closed WebSocket.
- ``user``: ``pusher.user.bind_global`` (server-to-user events, ``pusher:signin_error``).
- ``watchlist``: ``online`` / ``offline`` with ``{"name", "user_ids"}``.
- ``echo``: Laravel Echo callbacks: the listened event name, or ``here`` / ``joining`` / ``leaving``.
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from tests.support.matching import fields_match
from tests.support.requirements import require

JS_DIR = Path(__file__).resolve().parents[1] / "js"
DRIVER = JS_DIR / "driver.mjs"

EchoKind = Literal["channel", "private", "encrypted", "presence"]
RecordPredicate = Callable[["JsRecord"], bool]

# A reply may carry a large presence snapshot or payload; asyncio's default 64 KiB line limit is too small.
_LINE_LIMIT = 64 * 1024 * 1024
# Extra seconds the Python side waits beyond the driver's own timeout, so the driver's descriptive
# timeout error (it knows the client's state) arrives before ours.
_REPLY_GRACE = 3.0


def js_harness_problem() -> str | None:
    """Why the JS clients cannot run here (no node, no installed node_modules), or None when they can."""
    if shutil.which("node") is None:
        return "`node` is not on PATH (install Node 20: `make node-deps`)"
    for package in ("pusher-js", "laravel-echo"):
        if not (JS_DIR / "node_modules" / package / "package.json").exists():
            return f"tests/js/node_modules/{package} is missing (run `cd tests/js && npm ci`)"
    return None


def require_js_harness() -> None:
    """Skip the calling test when node or node_modules is missing, except in CI (CI=true) where it fails."""
    problem = js_harness_problem()
    require(problem is None, f"JS client harness unavailable: {problem}")


class JsHarnessUnavailableError(RuntimeError):
    """node or the npm packages are missing."""


class JsClientError(RuntimeError):
    """The driver refused or failed an operation; `data` carries what the library reported."""

    def __init__(self, op: str, message: str, data: Any = None) -> None:
        """Keep the op name and the library's error data for assertions."""
        super().__init__(f"{op}: {message}" + (f" ({json.dumps(data)})" if data is not None else ""))
        self.op = op
        self.message = message
        self.data = data

    @property
    def code(self) -> int | None:
        """The Pusher error / close code found in `data`, if any (e.g. 4001 for an unknown app key)."""
        return find_code(self.data)


class JsSubscriptionError(JsClientError):
    """pusher-js emitted `pusher:subscription_error`; `data` is ``{"type", "error", "status"}``."""

    @property
    def status(self) -> int | None:
        """HTTP status of a failed auth request (pusher-js sets it for auth endpoint failures)."""
        if isinstance(self.data, dict) and isinstance(self.data.get("status"), int):
            return int(self.data["status"])
        return None


class JsWaitTimeoutError(AssertionError):
    """An expected record did not arrive in time (an assertion failure of the test)."""


def find_code(value: Any) -> int | None:
    """Dig the first integer `code` out of a (nested) pusher-js error object."""
    if isinstance(value, dict):
        code = value.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
        for key in ("data", "error"):
            found = find_code(value.get(key))
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class JsRecord:
    """One thing a client observed, in the order the driver saw it (`seq` is global and increasing)."""

    seq: int
    time: float  # wall clock, seconds since the epoch, taken in the driver
    cid: str
    source: str
    event: str
    channel: str | None
    data: Any
    user_id: str | None

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """True when every field equals the wanted value, or satisfies it when the value is callable."""
        return fields_match(lambda name: getattr(self, name), fields)


@dataclass(frozen=True)
class ClientState:
    """pusher-js connection state of one client."""

    state: str
    socket_id: str | None
    last_error: Any
    last_close: Any


@dataclass
class _Waiter:
    cid: str
    predicate: RecordPredicate
    since: int
    future: asyncio.Future[JsRecord]


def _form_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """pusher-js URL-encodes params with String(); JSON-encode non-strings so dicts survive the trip."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in (params or {}).items()}


class JsClients:
    """One node process hosting many real pusher-js / Echo clients. Use as `async with JsClients() as js:`."""

    def __init__(self, *, default_timeout: float = 5.0, env: Mapping[str, str] | None = None) -> None:
        """`default_timeout` bounds every operation that does not pass its own; `env` adds variables."""
        self.default_timeout = default_timeout
        self.versions: dict[str, str] = {}
        self._env = dict(env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._next_id = 0
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._records: dict[str, list[JsRecord]] = {}
        self._waiters: list[_Waiter] = []
        self._stderr: deque[str] = deque(maxlen=400)
        self._ready: asyncio.Future[dict[str, str]] | None = None
        self._dead: str | None = None
        self._last_seq = 0

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, *, timeout: float = 15.0) -> Self:
        """Start the node driver and wait for its ready line (which reports library versions)."""
        problem = js_harness_problem()
        if problem is not None:
            raise JsHarnessUnavailableError(problem)
        node = shutil.which("node")
        assert node is not None
        self._ready = asyncio.get_running_loop().create_future()
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            cwd=str(JS_DIR),
            env={**os.environ, **self._env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name="js-driver-stdout"),
            asyncio.create_task(self._read_stderr(), name="js-driver-stderr"),
        ]
        try:
            self.versions = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Stop the driver: close its stdin (it exits on EOF), then kill it by pid if it lingers."""
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()  # SIGKILL to this pid only
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_everything("JsClients closed")

    async def __aenter__(self) -> Self:
        """Start on entering `async with`."""
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop on leaving `async with`."""
        await self.close()

    def stderr_tail(self, lines: int = 60) -> str:
        """The driver's recent stderr (library warnings, crashes), for failure messages."""
        return "\n".join(list(self._stderr)[-lines:])

    # --- connection --------------------------------------------------------------------------------

    async def connect(
        self,
        cid: str,
        *,
        port: int,
        key: str,
        host: str = "127.0.0.1",
        auth_url: str | None = None,
        user_auth_url: str | None = None,
        auth_params: Mapping[str, Any] | None = None,
        user_auth_params: Mapping[str, Any] | None = None,
        activity_timeout: float | None = None,
        pong_timeout: float | None = None,
        echo: bool = False,
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Create client `cid` and return its socket_id once pusher-js reports `connected`.

        `auth_params` go to both auth endpoints unless `user_auth_params` is given; non-string values
        are JSON-encoded. Timeouts are in seconds. `options` is merged last into the options passed to
        `new Pusher(key, ...)` (or `new Echo({...})` with `echo=True`). Raises `JsClientError` (with
        `.code`, e.g. 4001) when the connection is refused.
        """
        result = await self._request(
            "connect",
            timeout,
            cid=cid,
            key=key,
            host=host,
            port=port,
            authUrl=auth_url,
            userAuthUrl=user_auth_url,
            authParams=_form_params(auth_params),
            userAuthParams=_form_params(user_auth_params) if user_auth_params is not None else None,
            activityTimeoutMs=None if activity_timeout is None else int(activity_timeout * 1000),
            pongTimeoutMs=None if pong_timeout is None else int(pong_timeout * 1000),
            echo=echo,
            options=dict(options or {}),
        )
        return str(result["socket_id"])

    async def reconnect(self, cid: str, *, timeout: float | None = None) -> str:
        """`pusher.connect()` a disconnected client again; returns the new socket_id."""
        result = await self._request("reconnect", timeout, cid=cid)
        return str(result["socket_id"])

    async def disconnect(self, cid: str) -> None:
        """`pusher.disconnect()`: closes the WebSocket; the client's records are kept."""
        await self._request("disconnect", None, cid=cid)

    async def wait_state(self, cid: str, state: str, *, timeout: float | None = None) -> str | None:
        """Wait until the connection state is `state`; returns the socket_id at that moment."""
        result = await self._request("wait_state", timeout, cid=cid, state=state)
        socket_id = result.get("socket_id")
        return None if socket_id is None else str(socket_id)

    async def state(self, cid: str) -> ClientState:
        """Current pusher-js state, socket_id, last connection error and last transport close."""
        result = await self._request("state", None, cid=cid)
        return ClientState(
            state=str(result["state"]),
            socket_id=result.get("socket_id"),
            last_error=result.get("last_error"),
            last_close=result.get("last_close"),
        )

    async def set_auth_params(self, cid: str, params: Mapping[str, Any], *, user: bool = False) -> None:
        """Replace the params later channel (or, with `user=True`, sign-in) auth requests send."""
        await self._request("set_auth_params", None, cid=cid, params=_form_params(params), user=user)

    # --- channels ----------------------------------------------------------------------------------

    async def subscribe(self, cid: str, channel: str, *, timeout: float | None = None) -> Any:
        """`pusher.subscribe(channel)` and wait for `pusher:subscription_succeeded`.

        Returns the event data; for presence channels a members snapshot
        ``{"me": {"id", "info"}, "my_id", "count", "members": [{"id", "info"}, ...]}``.
        Raises `JsSubscriptionError` on `pusher:subscription_error`.
        """
        result = await self._request("subscribe", timeout, cid=cid, channel=channel)
        if result["status"] != "succeeded":
            raise JsSubscriptionError("subscribe", f"{cid} could not subscribe to {channel}", result["data"])
        return result["data"]

    async def subscribe_error(self, cid: str, channel: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Subscribe expecting failure; return the `pusher:subscription_error` data (type, error, status)."""
        result = await self._request("subscribe", timeout, cid=cid, channel=channel)
        if result["status"] == "succeeded":
            raise AssertionError(f"{cid} unexpectedly subscribed to {channel}: {result['data']!r}")
        data: dict[str, Any] = result["data"] or {}
        return data

    async def unsubscribe(self, cid: str, channel: str) -> None:
        """`pusher.unsubscribe(channel)` (the protocol has no acknowledgement)."""
        await self._request("unsubscribe", None, cid=cid, channel=channel)

    async def trigger(self, cid: str, channel: str, event: str, data: Any) -> bool:
        """Client event via `channel.trigger(event, data)`; returns pusher-js's "was it sent" flag."""
        return bool(await self._request("trigger", None, cid=cid, channel=channel, event=event, data=data))

    async def members(self, cid: str, channel: str) -> dict[str, Any]:
        """Presence members as pusher-js sees them now: ``{"me", "my_id", "count", "members": [...]}``."""
        result: dict[str, Any] = await self._request("members", None, cid=cid, channel=channel)
        return result

    async def signin(self, cid: str, *, wait_user_channel: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """`pusher.signin()`; return the parsed user_data after `pusher:signin_success`.

        With `wait_user_channel` it also waits until the `#server-to-user-{id}` subscription is
        acknowledged, so a server-to-user event sent right after is deliverable. Raises `JsClientError`
        on `pusher:signin_error` (auth endpoint failure) or a connection error / close during sign-in.
        Note pusher-js ignores further signin() calls on the same client once one was requested.
        """
        result = await self._request("signin", timeout, cid=cid, waitUserChannel=wait_user_channel)
        if wait_user_channel and result.get("user_channel") != "succeeded":
            raise JsClientError("signin", f"server-to-user subscription of {cid} failed", result)
        user_data: dict[str, Any] = result["user_data"]
        return user_data

    # --- Laravel Echo --------------------------------------------------------------------------------

    async def echo_listen(
        self, cid: str, kind: EchoKind, name: str, event: str | None = None, *, timeout: float | None = None
    ) -> str:
        """Echo `channel()/private()/encryptedPrivate()/join()` + `.listen(event)`; wait for subscription.

        Echo adds the `private-` / `private-encrypted-` / `presence-` prefix to `name`, and prefixes
        `event` with its namespace (``App.Events``) unless the name starts with ``.``. Presence channels
        also record Echo's `here` / `joining` / `leaving` callbacks. Returns the full channel name;
        raises `JsSubscriptionError` when Echo's `error()` callback fires.
        """
        result = await self._request("echo_listen", timeout, cid=cid, kind=kind, name=name, event=event)
        if result["status"] != "succeeded":
            raise JsSubscriptionError("echo_listen", f"{cid} could not join {result['channel']}", result["data"])
        return str(result["channel"])

    async def echo_whisper(self, cid: str, kind: EchoKind, name: str, event: str, data: Any) -> None:
        """Echo `.whisper(event, data)` (a `client-{event}` client event) on a joined private/presence channel."""
        await self._request("echo_whisper", None, cid=cid, kind=kind, name=name, event=event, data=data)

    async def echo_leave(self, cid: str, name: str) -> None:
        """Echo `leave(name)`: leaves the public, private, encrypted and presence variants."""
        await self._request("echo_leave", None, cid=cid, name=name)

    # --- records -----------------------------------------------------------------------------------

    def events(self, cid: str, predicate: RecordPredicate | None = None, **fields: Any) -> list[JsRecord]:
        """Records of client `cid` so far (oldest first), optionally filtered like `wait_for`."""
        match = self._matcher(predicate, fields)
        return [record for record in self._records.get(cid, []) if match(record)]

    def mark(self) -> int:
        """The newest record's seq; pass as `since=` to only match records arriving after this point."""
        return self._last_seq

    def clear(self, cid: str | None = None) -> None:
        """Forget recorded events of one client (or all). Seq numbers keep increasing."""
        if cid is None:
            self._records.clear()
        else:
            self._records.pop(cid, None)

    def close_code(self, cid: str) -> int | None:
        """Code of the latest WebSocket close (or close-carrying error) the client saw, if any."""
        for record in reversed(self._records.get(cid, [])):
            if record.source == "transport" and record.event == "closed":
                return find_code(record.data)
            if record.source == "connection" and record.event == "error":
                code = find_code(record.data)
                if code is not None:
                    return code
        return None

    async def wait_for(
        self,
        cid: str,
        predicate: RecordPredicate | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
        **fields: Any,
    ) -> JsRecord:
        """Return the first record of `cid` with seq > `since` matching `predicate` and `fields`.

        Already-recorded events count, so there is no race with events that arrived before the call.
        `fields` compare JsRecord attributes (`source`, `event`, `channel`, `data`, `user_id`) for
        equality, or call the value when it is callable: `wait_for("a", event="x", data=lambda d: d["n"] > 1)`.
        Raises `JsWaitTimeoutError` (an AssertionError) listing recent records on timeout.
        """
        match = self._matcher(predicate, fields)
        for record in self._records.get(cid, []):
            if record.seq > since and match(record):
                return record
        if self._dead is not None:
            raise JsClientError("wait_for", self._dead)
        waiter = _Waiter(cid, match, since, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            raise JsWaitTimeoutError(
                f"client {cid}: no record matching {fields or predicate} within {timeout} s; "
                f"recent records:\n{self._describe_recent(cid)}"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def expect_none(
        self,
        cid: str,
        predicate: RecordPredicate | None = None,
        *,
        within: float = 0.5,
        since: int = 0,
        **fields: Any,
    ) -> None:
        """Assert that no matching record (seq > `since`) exists or arrives within `within` seconds."""
        try:
            record = await self.wait_for(cid, predicate, timeout=within, since=since, **fields)
        except JsWaitTimeoutError:
            return
        raise AssertionError(f"client {cid}: unexpected record {record}")

    # --- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _matcher(predicate: RecordPredicate | None, fields: Mapping[str, Any]) -> RecordPredicate:
        unknown = set(fields) - {"source", "event", "channel", "data", "user_id", "cid"}
        if unknown:
            raise TypeError(f"unknown JsRecord fields: {sorted(unknown)}")

        def match(record: JsRecord) -> bool:
            return record.matches(fields) and (predicate is None or predicate(record))

        return match

    def _describe_recent(self, cid: str, count: int = 25) -> str:
        lines = [
            f"  #{r.seq} {r.source} {r.event} channel={r.channel} data={json.dumps(r.data)[:300]}"
            + (f" user_id={r.user_id}" if r.user_id else "")
            for r in self._records.get(cid, [])[-count:]
        ]
        return "\n".join(lines) or "  (none)"

    async def _request(self, op: str, timeout: float | None, **args: Any) -> Any:
        if self._dead is not None:
            raise JsClientError(op, self._dead)
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise JsClientError(op, "JsClients is not started")
        seconds = self.default_timeout if timeout is None else timeout
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (op, future)
        line = json.dumps({"id": request_id, "op": op, "args": {**args, "timeoutMs": int(seconds * 1000)}})
        try:
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
            return await asyncio.wait_for(future, seconds + _REPLY_GRACE)
        except TimeoutError:
            raise JsClientError(op, f"no reply from the driver within {seconds + _REPLY_GRACE} s") from None
        finally:
            self._pending.pop(request_id, None)

    def _add_record(self, raw: dict[str, Any]) -> None:
        record = JsRecord(
            seq=int(raw["seq"]),
            time=float(raw["time"]),
            cid=str(raw["cid"]),
            source=str(raw["source"]),
            event=str(raw["event"]),
            channel=raw.get("channel"),
            data=raw.get("data"),
            user_id=None if raw.get("user_id") is None else str(raw["user_id"]),
        )
        self._last_seq = max(self._last_seq, record.seq)
        self._records.setdefault(record.cid, []).append(record)
        for waiter in list(self._waiters):
            if (
                waiter.cid == record.cid
                and record.seq > waiter.since
                and not waiter.future.done()
                and waiter.predicate(record)
            ):
                waiter.future.set_result(record)

    def _on_line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            # Only the driver writes stdout, so this is a bug worth seeing in failure output.
            self._stderr.append(f"[non-JSON stdout] {line[:500]!r}")
            return
        kind = message.get("type")
        if kind == "record":
            self._add_record(message)
        elif kind == "reply":
            pending = self._pending.get(message.get("id"))
            if pending is None:
                return  # the caller already timed out
            op, future = pending
            if future.done():
                return
            if message.get("ok"):
                future.set_result(message.get("result"))
            else:
                error = message.get("error") or {}
                future.set_exception(JsClientError(op, str(error.get("message")), error.get("data")))
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(dict(message.get("versions") or {}))

    async def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        async for line in proc.stdout:
            self._on_line(line)
        code = await proc.wait()
        # Give the stderr reader a moment to collect the crash output before reporting it.
        await asyncio.sleep(0.05)
        self._fail_everything(f"node driver exited with status {code}; stderr:\n{self.stderr_tail()}")

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        async for line in proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _fail_everything(self, why: str) -> None:
        """The driver is gone: fail every pending request and waiter instead of letting them time out."""
        if self._dead is None:
            self._dead = why
        for op, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(JsClientError(op, why))
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(JsClientError("wait_for", why))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(JsClientError("start", why))

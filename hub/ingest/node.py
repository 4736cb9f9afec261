"""HTTP API routes: publish (events, batch_events), channel queries, terminate user connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from hub.apps import App, AppRegistry
from hub.broker.base import Broker, BrokerUnavailable
from hub.broker.envelope import Kind, event_envelope, user_envelope
from hub.config import Settings
from hub.ingest.requests import VerifiedRequest, error_response, verify
from hub.metrics import Metrics
from hub.protocol.api import TriggerEvent, load_json_object, parse_batch, parse_event, parse_info, parse_trigger
from hub.protocol.channels import (
    ChannelKind,
    channel_name_error,
    channel_type,
    server_to_user_channel,
    user_id_error,
)
from hub.protocol.errors import ApiError
from hub.state.base import ClusterState, StateUnavailable
from hub.state.coordination import Coordination
from hub.tap import Tap

log = structlog.get_logger("hub.ingest")

Endpoint = Callable[[web.Request, VerifiedRequest], Awaitable[dict[str, Any]]]


class IngestNode:
    """Answers the Pusher HTTP API from the shared state and publishes through the broker."""

    def __init__(
        self,
        settings: Settings,
        apps: AppRegistry,
        broker: Broker,
        state: ClusterState,
        metrics: Metrics,
        coordination: Coordination,
        tap: Tap | None = None,
    ) -> None:
        self.coordination = coordination
        self.tap = tap or Tap(settings.node_id)
        self.settings = settings
        self.apps = apps
        self.broker = broker
        self.state = state
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        """The API's routes, each wrapped with verification, error mapping and metrics."""
        return [
            web.post("/apps/{app_id}/events", self._wrap("events", self._trigger)),
            web.post("/apps/{app_id}/batch_events", self._wrap("batch_events", self._batch)),
            web.get("/apps/{app_id}/channels", self._wrap("channels", self._channels, read=True)),
            web.get("/apps/{app_id}/channels/{channel}", self._wrap("channel", self._channel, read=True)),
            web.get("/apps/{app_id}/channels/{channel}/users", self._wrap("users", self._users, read=True)),
            web.post("/apps/{app_id}/users/{user_id}/events", self._wrap("user_events", self._user_event)),
            web.post(
                "/apps/{app_id}/users/{user_id}/terminate_connections",
                self._wrap("terminate_connections", self._terminate),
            ),
            # The path pusher-http-python (3.3) signs and posts to: no /apps/{app_id} prefix.
            web.post("/users/{user_id}/terminate_connections", self._wrap("terminate_connections", self._terminate)),
        ]

    def _wrap(
        self, name: str, endpoint: Endpoint, *, read: bool = False
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                verified = await verify(request, self.apps, self.settings.max_http_body_kb * 1024)
                if read:
                    await self._check_reads(verified.app)
                self.metrics.http_received_bytes.inc(len(verified.body))
                response = web.json_response(await endpoint(request, verified))
            except ApiError as exc:
                if exc.status >= 500:
                    log.warning("api_error", endpoint=name, status=exc.status, error=exc.message)
                response = error_response(exc)
            self.metrics.http_requests.labels(name, str(response.status)).inc()
            self.metrics.http_request_seconds.labels(name).observe(time.perf_counter() - started)
            if response.body is not None and isinstance(response.body, bytes):
                self.metrics.http_sent_bytes.inc(len(response.body))
            return response

        return handler

    async def _publish(self, app: App, event: TriggerEvent) -> None:
        """Publish one event to each of its channels; ApiError(503) if the broker refused any."""
        envelopes = [
            event_envelope(
                app.id,
                channel,
                event.name,
                event.data,
                origin_node=self.settings.node_id,
                except_socket=event.socket_id,
            )
            for channel in event.channels
        ]
        try:
            await asyncio.gather(*(self.broker.publish(e) for e in envelopes))
            for channel in event.channels:
                if channel_type(channel).cache:
                    await self.state.cache_set(app.id, channel, event.name, event.data, self.settings.cache_ttl)
        except (BrokerUnavailable, StateUnavailable) as exc:
            raise ApiError(503, f"The event could not be published: {exc or 'broker unavailable'}.") from None
        self.metrics.published_events.labels(app.id, "http").inc(len(envelopes))
        if self.tap.watching(app.id):
            for channel in event.channels:
                self.tap.emit(
                    app.id, "api_event", channel=channel, event=event.name, data=event.data, socket_id=event.socket_id
                )

    async def _spend(self, app: App, kind: str, amount: int, limit: int, refusal: str) -> None:
        """Count ``amount`` against a per-app, per-second, cluster-wide limit; ApiError(429) past it."""
        if limit < 0:
            return
        used = await self._state_read(self.coordination.count(f"{kind}:{app.id}", amount, 1.0))
        if used > limit:
            self.metrics.rate_limited.labels(app.id, kind).inc()
            raise ApiError(429, refusal)

    async def _check_rate(self, app: App, events: list[TriggerEvent]) -> None:
        """Count the publishes (one per channel, as Soketi does) against the app's per-second limit."""
        limit = app.max_backend_events_per_second
        wanted = sum(len(e.channels) for e in events)
        await self._spend(
            app, "backend_events", wanted, limit, f"Too many events: the app may publish {limit} per second."
        )

    async def _check_reads(self, app: App) -> None:
        """Count a channel query against the app's per-second read limit (Soketi's maxReadRequestsPerSecond)."""
        limit = app.max_read_requests_per_second
        message = f"Too many requests: the app may make {limit} channel queries per second."
        await self._spend(app, "read_requests", 1, limit, message)

    async def _channel_info(self, app: App, channel: str, info: frozenset[str]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if "subscription_count" in info:
            attrs["subscription_count"] = await self.state.channel_subscriptions(app.id, channel)
        if "user_count" in info and channel_type(channel).kind is ChannelKind.PRESENCE:
            attrs["user_count"] = len(await self.state.presence_members(app.id, channel))
        return attrs

    async def _trigger(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        event = parse_trigger(verified.body, verified.app.limits)
        await self._check_rate(verified.app, [event])
        await self._publish(verified.app, event)
        if not event.info:
            return {}
        return {
            "channels": {
                c: await self._state_read(self._channel_info(verified.app, c, event.info)) for c in event.channels
            }
        }

    async def _batch(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        events = parse_batch(verified.body, verified.app.limits)
        await self._check_rate(verified.app, events)
        for event in events:
            await self._publish(verified.app, event)
        if not any(e.info for e in events):
            return {}
        results = []
        for e in events:
            results.append(
                await self._state_read(self._channel_info(verified.app, e.channels[0], e.info)) if e.info else {}
            )
        return {"batch": results}

    async def _state_read(self, read: Awaitable[Any]) -> Any:
        try:
            return await read
        except StateUnavailable:
            raise ApiError(503, "Channel state is unavailable; try again shortly.") from None

    async def _channels(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        prefix = request.query.get("filter_by_prefix", "")
        info = parse_info(request.query.get("info"))
        if info - {"user_count", "subscription_count"}:
            raise ApiError(400, "Only info=user_count (and subscription_count) is supported here.")
        if "user_count" in info and not prefix.startswith("presence-"):
            raise ApiError(400, "info=user_count needs filter_by_prefix=presence-.")
        occupied = await self._state_read(self.state.channels(verified.app.id, prefix))
        result: dict[str, Any] = {}
        for channel, count in sorted(occupied.items()):
            attrs: dict[str, Any] = {}
            if "user_count" in info:
                attrs["user_count"] = len(await self._state_read(self.state.presence_members(verified.app.id, channel)))
            if "subscription_count" in info:
                attrs["subscription_count"] = count
            result[channel] = attrs
        return {"channels": result}

    def _channel_name(self, request: web.Request, verified: VerifiedRequest) -> str:
        channel = request.match_info["channel"]
        problem = channel_name_error(channel, verified.app.limits.max_channel_name_length, allow_server_channels=True)
        if problem:
            raise ApiError(400, f"Invalid channel {channel!r}: {problem}")
        return channel

    async def _channel(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        channel = self._channel_name(request, verified)
        info = parse_info(request.query.get("info"))
        unknown = info - {"user_count", "subscription_count", "cache"}
        if unknown:
            raise ApiError(400, f"Unsupported info attributes: {', '.join(sorted(unknown))}.")
        ctype = channel_type(channel)
        if "user_count" in info and ctype.kind is not ChannelKind.PRESENCE:
            raise ApiError(400, "info=user_count is only available for presence channels.")
        if "cache" in info and not ctype.cache:
            raise ApiError(400, "info=cache is only available for cache channels.")
        app_id = verified.app.id
        count = await self._state_read(self.state.channel_subscriptions(app_id, channel))
        result: dict[str, Any] = {"occupied": count > 0}
        if "subscription_count" in info:
            result["subscription_count"] = count
        if "user_count" in info:
            result["user_count"] = len(await self._state_read(self.state.presence_members(app_id, channel)))
        if "cache" in info:
            cached = await self._state_read(self.state.cache_get(app_id, channel))
            if cached is not None:
                result["cache"] = {"data": cached.data, "ttl": cached.ttl}
        return result

    async def _users(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        channel = self._channel_name(request, verified)
        if channel_type(channel).kind is not ChannelKind.PRESENCE:
            raise ApiError(400, "Users can only be listed for presence channels.")
        members = await self._state_read(self.state.presence_members(verified.app.id, channel))
        return {"users": [{"id": user_id} for user_id in members]}

    async def _user_event(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        """An event to every socket signed in as the user, as ``sendToUser`` does through its channel."""
        user_id = request.match_info["user_id"]
        problem = user_id_error(user_id)
        if problem:
            raise ApiError(400, problem)
        body = load_json_object(verified.body)
        body["channel"] = server_to_user_channel(user_id)
        body.pop("channels", None)
        event = parse_event(body, verified.app.limits, batch=False)
        await self._check_rate(verified.app, [event])
        await self._publish(verified.app, event)
        return {}

    async def _terminate(self, request: web.Request, verified: VerifiedRequest) -> dict[str, Any]:
        user_id = request.match_info["user_id"]
        problem = user_id_error(user_id)
        if problem:
            raise ApiError(400, problem)
        envelope = user_envelope(Kind.TERMINATE_USER, verified.app.id, user_id, None, origin_node=self.settings.node_id)
        try:
            await self.broker.publish(envelope)
        except BrokerUnavailable:
            raise ApiError(503, "The request could not be published: broker unavailable.") from None
        return {}

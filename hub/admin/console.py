"""The console's pages and the admin API endpoints behind them (the apps endpoints live in apps_api).

Pages: ``/console/`` serves one HTML page with its CSS and JS (hub/admin/static, no build step, no CDN);
they are public, and the page sends the admin token (kept in the browser's sessionStorage) as a bearer
token with every API call.

Endpoints (JSON, bearer token):

- ``GET /api/cluster``: every node's last stats post, and per-app totals over the cluster.
- ``GET /api/apps/{app_id}/channels?prefix=``: occupied channels with their subscription counts.
- ``GET /api/apps/{app_id}/channels/{channel}``: a channel's count, presence members with their
  user_info, a cache channel's cached event.
- ``POST /api/apps/{app_id}/events``: publish a test event (``{"channel", "name", "data"}``).
- ``GET /api/apps/{app_id}/stream``: the debug console's live stream (hub/admin/stream.py).
- ``GET /api/apps/{app_id}/webhooks``: queue depth and oldest age, recent failures, dead letters.
- ``POST /api/apps/{app_id}/dead-letters/{job_id}/replay`` and ``POST /api/apps/{app_id}/dead-letters/replay``
  (all of them): queue dead letters again, due now.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.admin.node_report import STALE_SECONDS
from hub.admin.server import ADMIN_CONTEXT, PUBLIC_PREFIXES, AdminContext, AdminError, read_json_object
from hub.admin.stream import stream
from hub.apps import App
from hub.broker.base import BrokerUnavailable
from hub.broker.envelope import event_envelope
from hub.protocol.api import parse_event
from hub.protocol.channels import ChannelKind, channel_name_error, channel_type
from hub.protocol.errors import ApiError
from hub.state.base import StateUnavailable
from hub.webhooks.payload import webhook_body
from hub.webhooks.queue import DeadLetter, WebhookJob
from hub.webhooks.redis_queue import WebhookQueueUnavailable

STATIC = Path(__file__).resolve().parent / "static"
PAGES = "/console"
# What the webhooks page lists at once; replaying all goes through every letter, this many at a time.
LIST_LIMIT = 200


def _ctx(request: web.Request) -> AdminContext:
    return request.app[ADMIN_CONTEXT]


def _app(request: web.Request) -> App:
    app_id = request.match_info["app_id"]
    app = _ctx(request).apps.by_id(app_id)
    if app is None:
        raise AdminError(404, f"The app {app_id} could not be found.")
    return app


async def _read(work: Any) -> Any:
    try:
        return await work
    except StateUnavailable:
        raise AdminError(503, "The cluster state is unavailable; try again shortly.") from None
    except WebhookQueueUnavailable:
        raise AdminError(503, "The webhook queue is unavailable; try again shortly.") from None


# -- pages ----------------------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PAGES + "/")


# -- cluster --------------------------------------------------------------------------------------------


async def _cluster(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    board = ctx.node_stats
    nodes = await _read(board.read(time.time(), STALE_SECONDS)) if board is not None else []
    apps: dict[str, dict[str, float]] = {}
    for node in nodes:
        for app_id, figures in (node.get("apps") or {}).items():
            total = apps.setdefault(app_id, {})
            for name, value in figures.items():
                total[name] = total.get(name, 0) + value
    return web.json_response(
        {"node_id": ctx.settings.node_id, "nodes": nodes, "apps": apps, "clustered": ctx.settings.redis_url is not None}
    )


# -- channels -------------------------------------------------------------------------------------------


async def _channels(request: web.Request) -> web.Response:
    app = _app(request)
    prefix = request.query.get("prefix", "")
    occupied = await _read(_ctx(request).state.channels(app.id, prefix))
    channels = [
        {"name": name, "subscription_count": count, "kind": _kind(name)} for name, count in sorted(occupied.items())
    ]
    return web.json_response({"channels": channels})


def _kind(channel: str) -> str:
    kind = channel_type(channel)
    return f"{kind.kind.value}, cache" if kind.cache else kind.kind.value


async def _channel(request: web.Request) -> web.Response:
    app = _app(request)
    name = request.match_info["channel"]
    problem = channel_name_error(name, app.limits.max_channel_name_length, allow_server_channels=True)
    if problem:
        raise AdminError(400, f"Invalid channel {name!r}: {problem}", "channel")
    state = _ctx(request).state
    kind = channel_type(name)
    result: dict[str, Any] = {
        "name": name,
        "kind": _kind(name),
        "subscription_count": await _read(state.channel_subscriptions(app.id, name)),
    }
    if kind.kind is ChannelKind.PRESENCE:
        members = await _read(state.presence_members(app.id, name))
        result["members"] = [{"id": user_id, "info": info} for user_id, info in sorted(members.items())]
    if kind.cache:
        cached = await _read(state.cache_get(app.id, name))
        result["cache"] = None if cached is None else {"event": cached.event, "data": cached.data, "ttl": cached.ttl}
    return web.json_response(result)


async def _publish(request: web.Request) -> web.Response:
    app = _app(request)
    ctx = _ctx(request)
    body = await read_json_object(request)
    try:
        event = parse_event(body, app.limits, batch=True)
    except ApiError as exc:
        raise AdminError(400, exc.message, "event") from None
    envelope = event_envelope(app.id, event.channels[0], event.name, event.data, origin_node=ctx.settings.node_id)
    try:
        await ctx.broker.publish(envelope)
        if channel_type(envelope.channel).cache:
            await ctx.state.cache_set(app.id, envelope.channel, event.name, event.data, ctx.settings.cache_ttl)
    except (BrokerUnavailable, StateUnavailable) as exc:
        raise AdminError(503, f"The event could not be published: {exc or 'broker unavailable'}.") from None
    tap = ctx.tap
    if tap is not None and tap.watching(app.id):
        tap.emit(app.id, "api_event", channel=envelope.channel, event=event.name, data=event.data, source="console")
    return web.json_response({"published": True, "channel": envelope.channel, "event": event.name})


# -- webhooks -------------------------------------------------------------------------------------------


def _letter(letter: DeadLetter) -> dict[str, Any]:
    job = letter.job
    try:
        events = json.loads(job.body).get("events") or []
    except (ValueError, AttributeError):
        events = []
    return {
        "id": job.id,
        "url": job.url,
        "webhooks": [str(e.get("name")) for e in events if isinstance(e, dict)],
        "events": events,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "died_at": letter.died_at,
        "expires_at": letter.expires_at,
        "error": letter.error,
    }


async def _webhooks(request: web.Request) -> web.Response:
    app = _app(request)
    queue = _ctx(request).webhook_queue
    now = time.time()
    stats = await _read(queue.app_stats(app.id, now))
    failures = await _read(queue.failures(app.id, 50))
    letters, total = await _read(queue.dead_letters(app.id, now, LIST_LIMIT))
    return web.json_response(
        {
            "queue": {"depth": stats.depth, "oldest_age": stats.oldest_age},
            "failures": [
                {
                    "job_id": f.job_id,
                    "url": f.url,
                    "at": f.at,
                    "attempts": f.attempts,
                    "error": f.error,
                    "gave_up": f.gave_up,
                }
                for f in failures
            ],
            "dead_letters": [_letter(letter) for letter in letters],
            "dead_letter_total": total,
            "dead_letter_ttl": _ctx(request).settings.webhook_dead_letter_ttl,
            "urls": [hook.url for hook in app.webhooks],
        }
    )


def refreshed(job: WebhookJob) -> WebhookJob:
    """A dead letter's job made new for a replay: new id, no attempts, and ``time_ms`` of now.

    The original ``time_ms`` is usually past the 300 s that the Pusher SDKs accept, so a replay with
    it would be refused by the receiver it is meant for.
    """
    now = time.time()
    try:
        events = json.loads(job.body).get("events") or []
        body = webhook_body(int(now * 1000), events)
    except (ValueError, AttributeError):
        body = job.body
    return replace(job, id=secrets.token_hex(8), body=body, created_at=now, attempts=0)


async def _replay_one(request: web.Request) -> web.Response:
    app = _app(request)
    job_id = request.match_info["job_id"]
    if not await _read(_ctx(request).webhook_queue.replay(app.id, job_id, refreshed, time.time())):
        raise AdminError(404, f"No dead letter {job_id} (already replayed, or expired).")
    return web.json_response({"replayed": 1})


async def _replay_all(request: web.Request) -> web.Response:
    app = _app(request)
    queue = _ctx(request).webhook_queue
    replayed = 0
    while True:
        letters, _ = await _read(queue.dead_letters(app.id, time.time(), LIST_LIMIT))
        if not letters:
            break
        done = 0
        for letter in letters:
            done += bool(await _read(queue.replay(app.id, letter.job.id, refreshed, time.time())))
        replayed += done
        if done == 0:
            break  # another console replays them at the same moment
    return web.json_response({"replayed": replayed})


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the console's pages and endpoints."""
    app[PUBLIC_PREFIXES].append(PAGES)
    app.router.add_get(PAGES, _root)
    app.router.add_get(PAGES + "/", _index)
    app.router.add_static(PAGES + "/static", STATIC, append_version=False)
    app.router.add_get("/api/cluster", _cluster)
    app.router.add_get("/api/apps/{app_id}/channels", _channels)
    app.router.add_get("/api/apps/{app_id}/channels/{channel}", _channel)
    app.router.add_post("/api/apps/{app_id}/events", _publish)
    app.router.add_get("/api/apps/{app_id}/stream", stream)
    app.router.add_get("/api/apps/{app_id}/webhooks", _webhooks)
    app.router.add_post("/api/apps/{app_id}/dead-letters/replay", _replay_all)
    app.router.add_post("/api/apps/{app_id}/dead-letters/{job_id}/replay", _replay_one)

"""Keeping this node's share of the cluster state true: heartbeats, resync after outages, reaping.

After a store outage (or after being reaped while paused) the node rewrites its whole share from
its live sockets. Any node may reap a dead one; the store lets only one do it at a time, and the
reaper announces the member_removed events the dead node can no longer send.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from hub.protocol.messages import member_removed_data
from hub.state.base import Departures, StateUnavailable
from hub.ws.node import WsNode

log = structlog.get_logger("hub.cluster")


async def announce(node: WsNode, departures: Departures) -> None:
    """Publish ``member_removed`` for members that left with a node."""
    for app_id, channel, user_id in departures.members_removed:
        await node.ctx.publish(app_id, channel, "pusher_internal:member_removed", member_removed_data(user_id))
    for app_id, channel in departures.vacated:
        app = node.apps.by_id(app_id)
        if app is not None:
            node.ctx.webhooks.channel_vacated(app, channel)
    for app_id, channel, user_id in departures.members_removed:
        app = node.apps.by_id(app_id)
        if app is not None:
            node.ctx.webhooks.member_removed(app, channel, user_id)
    for app_id, channel in departures.counts:
        app = node.apps.by_id(app_id)
        if app is not None:
            node.ctx.count_changed(app, channel)
    for app_id, user_id in departures.users_offline:
        app = node.apps.by_id(app_id)
        if app is not None:
            await node.watchlists.announce(app, user_id, online=False)


async def run_maintenance(node: WsNode) -> None:
    """Heartbeat, resync and reap forever, every third of the node timeout (cancelled at shutdown)."""
    ctx = node.ctx
    interval = max(0.2, ctx.settings.node_timeout / 3)
    in_sync = True
    while True:
        try:
            known = await ctx.state.heartbeat()
            # On Redis Cluster the heartbeat's shard may be fine while an app's shard failed over: any
            # failed state write since the last resync makes the node rewrite its share.
            if not known or not in_sync or ctx.state.needs_resync:
                started = time.perf_counter()
                await ctx.state.resync(node.snapshot())
                log.info("state_resynced", reaped=not known, seconds=round(time.perf_counter() - started, 4))
            in_sync = True
            departures = await ctx.state.reap_dead_nodes(ctx.settings.node_timeout)
            if departures.vacated or departures.members_removed or departures.users_offline:
                ctx.metrics.reaped_nodes.inc()
                log.info(
                    "dead_node_reaped",
                    vacated=len(departures.vacated),
                    members_removed=len(departures.members_removed),
                )
                await announce(node, departures)
        except StateUnavailable:
            if in_sync:
                log.warning("state_unavailable", op="heartbeat")
            in_sync = False
        await asyncio.sleep(interval)

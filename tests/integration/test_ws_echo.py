"""Laravel Echo (on pusher-js) as a Laravel app configures it, against hub and the `pusher` SDK backend.

The shapes come from the seed project: private channels `private-chat.{a}.{b}`, the `message.sent` event
(`broadcastAs`), listened to with a leading dot, and `toOthers()` (the SDK's `socket_id`) so the sender's
own tab does not receive its message twice.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.topology import APP_KEY, Topology


def chat_name() -> str:
    """`chat.{a}.{b}` with participant ids no other test uses (Echo adds the `private-` prefix)."""
    a = random.randrange(1, 10**9)
    return f"chat.{a}.{a + 1}"


async def connect_echo(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, params: dict[str, Any] | None = None
) -> str:
    """An Echo client whose `authEndpoint` is the SDK-signed auth server."""
    return await js.connect(
        cid, port=topology.ws_port(node), key=APP_KEY, auth_url=auth.channel_auth_url, auth_params=params, echo=True
    )


async def test_echo_private_listener_receives_message_sent_triggered_by_the_sdk(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    name = chat_name()
    await connect_echo(js, topology, auth, "mitra", 1)
    channel = await js.echo_listen("mitra", "private", name, ".message.sent")
    assert channel == f"private-{name}"
    message = {"message": {"id": 17, "body": "Halo!", "sender": {"id": 1, "name": "Mitra"}}}

    await asyncio.to_thread(topology.sdk().trigger, channel, "message.sent", message)

    record = await js.wait_for("mitra", source="echo", channel=channel, event=".message.sent")
    assert record.data == message


async def test_echo_to_others_skips_the_senders_socket(js: JsClients, topology: Topology, auth: AuthServer) -> None:
    name = chat_name()
    sender = await connect_echo(js, topology, auth, "mitra", 0)
    await connect_echo(js, topology, auth, "bumdes", 1)
    channel = await js.echo_listen("mitra", "private", name, ".message.sent")
    await js.echo_listen("bumdes", "private", name, ".message.sent")
    mark = js.mark()

    # Laravel's broadcast(...)->toOthers() passes the X-Socket-ID of the sender's request as socket_id.
    await asyncio.to_thread(topology.sdk().trigger, channel, "message.sent", {"body": "hi"}, sender)

    record = await js.wait_for("bumdes", source="echo", channel=channel, event=".message.sent", since=mark)
    assert record.data == {"body": "hi"}
    await js.expect_none("mitra", source="message", channel=channel, event="message.sent", since=mark, within=0.3)


async def test_echo_presence_reports_here_joining_and_leaving(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    name = f"room.{random.randrange(10**9)}"
    await connect_echo(js, topology, auth, "alice", 0, {"user_id": "1", "user_info": {"id": 1, "name": "Alice"}})
    await connect_echo(js, topology, auth, "bob", 1, {"user_id": "2", "user_info": {"id": 2, "name": "Bob"}})
    channel = await js.echo_listen("alice", "presence", name)
    here = await js.wait_for("alice", source="echo", channel=channel, event="here")
    assert here.data == [{"id": 1, "name": "Alice"}]

    await js.echo_listen("bob", "presence", name)

    joining = await js.wait_for("alice", source="echo", channel=channel, event="joining")
    assert joining.data == {"id": 2, "name": "Bob"}
    bob_here = await js.wait_for("bob", source="echo", channel=channel, event="here")
    assert sorted(bob_here.data, key=lambda m: m["id"]) == [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]
    await js.expect_none("bob", source="echo", channel=channel, event="joining", within=0.2)

    await js.echo_leave("bob", name)

    leaving = await js.wait_for("alice", source="echo", channel=channel, event="leaving")
    assert leaving.data == {"id": 2, "name": "Bob"}


async def test_echo_whisper_reaches_the_other_participants_listen_for_whisper(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    name = chat_name()
    await connect_echo(js, topology, auth, "mitra", 0)
    await connect_echo(js, topology, auth, "bumdes", 1)
    channel = await js.echo_listen("mitra", "private", name, ".client-typing")
    await js.echo_listen("bumdes", "private", name, ".client-typing")  # what listenForWhisper('typing') binds
    mark = js.mark()

    await js.echo_whisper("mitra", "private", name, "typing", {"typing": True})

    record = await js.wait_for("bumdes", source="echo", channel=channel, event=".client-typing", since=mark)
    assert record.data == {"typing": True}
    await js.expect_none("mitra", source="echo", channel=channel, event=".client-typing", since=mark, within=0.3)

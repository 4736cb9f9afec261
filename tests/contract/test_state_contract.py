"""The ClusterState contract (hub/state/base.py), run against MemoryClusterState and RedisClusterState.

Two nodes are two state objects sharing one store: one MemoryStore, or one redis-server and key prefix.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.state.base import Departures, NodeSnapshot
from tests.contract.conftest import StateCluster

APP = "1"
OTHER_APP = "2"


def normalized(departures: Departures) -> tuple[set[Any], set[Any], set[Any], dict[Any, int]]:
    """Departures without order (implementations may report transitions in any order), checking no duplicates."""
    for items in (departures.vacated, departures.members_removed, departures.users_offline):
        assert len(items) == len(set(items)), f"a transition was reported twice: {items}"
    return (
        set(departures.vacated),
        set(departures.members_removed),
        set(departures.users_offline),
        dict(departures.counts),
    )


# channel occupancy


async def test_channel_count_sums_sockets_of_every_node(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    assert await a.join_channel(APP, "news") == 1
    assert await b.join_channel(APP, "news") == 2
    assert await b.join_channel(APP, "news") == 3
    assert await a.channel_subscriptions(APP, "news") == 3
    assert await b.leave_channel(APP, "news") == 2
    assert await a.channel_subscriptions(APP, "news") == 2


async def test_channel_occupied_and_vacated_exactly_once_under_concurrent_joins_and_leaves(
    cluster: StateCluster,
) -> None:
    a, b = await cluster.nodes("a", "b")
    nodes = [a, b] * 25
    joined = await asyncio.gather(*(node.join_channel(APP, "busy") for node in nodes))
    assert sorted(joined) == list(range(1, 51))  # each join saw a different total: exactly one saw 1
    left = await asyncio.gather(*(node.leave_channel(APP, "busy") for node in nodes))
    assert sorted(left) == list(range(50))  # exactly one saw 0
    assert await a.channel_subscriptions(APP, "busy") == 0


async def test_leaving_a_channel_the_node_never_joined_changes_nothing(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.join_channel(APP, "news")
    assert await b.leave_channel(APP, "news") == 1
    assert await a.channel_subscriptions(APP, "news") == 1
    assert await b.leave_channel(APP, "nowhere") == 0
    assert await a.channels(APP) == {"news": 1}


async def test_channels_lists_occupied_channels_matching_prefix(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.join_channel(APP, "presence-room")
    await b.join_channel(APP, "presence-room")
    await b.join_channel(APP, "private-chat")
    await a.join_channel(APP, "public")
    await a.join_channel(APP, "gone")
    await a.leave_channel(APP, "gone")
    assert await a.channels(APP) == {"presence-room": 2, "private-chat": 1, "public": 1}
    assert await b.channels(APP, "presence-") == {"presence-room": 2}
    assert await b.channels(APP, "pr") == {"presence-room": 2, "private-chat": 1}
    assert await b.channels(APP, "presence-*") == {}  # a prefix is literal, not a pattern
    assert await b.channels(OTHER_APP) == {}


async def test_apps_are_counted_separately(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.join_channel(APP, "news")
    assert await b.join_channel(OTHER_APP, "news") == 1
    assert await a.channel_subscriptions(OTHER_APP, "news") == 1
    assert await a.channel_subscriptions(APP, "news") == 1


# presence


async def test_presence_member_added_once_when_user_joins_from_two_nodes_at_once(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    joins = await asyncio.gather(
        *(node.join_presence(APP, "presence-room", "u1", {"name": "Ann"}, 100) for node in [a, b] * 10)
    )
    assert [j.first for j in joins].count(True) == 1
    assert all(j.accepted for j in joins)
    assert await b.presence_members(APP, "presence-room") == {"u1": {"name": "Ann"}}


async def test_presence_member_removed_once_when_last_socket_of_user_leaves(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    nodes = [a, b] * 10
    for node in nodes:
        await node.join_presence(APP, "presence-room", "u1", {"name": "Ann"}, 100)
    await a.join_presence(APP, "presence-room", "u2", None, 100)
    lasts = await asyncio.gather(*(node.leave_presence(APP, "presence-room", "u1") for node in nodes))
    assert lasts.count(True) == 1
    assert await a.presence_members(APP, "presence-room") == {"u2": None}


async def test_presence_join_reports_members_after_the_join(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    first = await a.join_presence(APP, "presence-room", "u1", {"name": "Ann"}, 100)
    assert (first.accepted, first.first, first.members) == (True, True, {"u1": {"name": "Ann"}})
    second = await b.join_presence(APP, "presence-room", "u2", {"name": "Bob"}, 100)
    assert second.members == {"u1": {"name": "Ann"}, "u2": {"name": "Bob"}}
    again = await b.join_presence(APP, "presence-room", "u1", {"name": "Ann on b"}, 100)
    assert (again.accepted, again.first) == (True, False)
    assert again.members["u1"] == {"name": "Ann"}  # the first socket's info stands


async def test_presence_user_info_may_be_any_json_value(cluster: StateCluster) -> None:
    (a,) = await cluster.nodes("a")
    infos: dict[str, Any] = {
        "object": {"name": "Zoë", "tags": ["x", 1, 2.5, True, None], "nested": {"k": {}}},
        "string": "just text",
        "number": 42,
        "null": None,
        "list": [1, "two"],
        "false": False,
    }
    for user_id, info in infos.items():
        await a.join_presence(APP, "presence-any", user_id, info, 100)
    assert await a.presence_members(APP, "presence-any") == infos


async def test_presence_refuses_new_user_past_member_limit_but_admits_present_user(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.join_presence(APP, "presence-small", "u1", 1, 2)
    await b.join_presence(APP, "presence-small", "u2", 2, 2)
    refused = await a.join_presence(APP, "presence-small", "u3", 3, 2)
    assert (refused.accepted, refused.first, refused.members) == (False, False, {"u1": 1, "u2": 2})
    existing = await b.join_presence(APP, "presence-small", "u1", 1, 2)
    assert (existing.accepted, existing.first) == (True, False)
    assert await a.presence_members(APP, "presence-small") == {"u1": 1, "u2": 2}
    await b.leave_presence(APP, "presence-small", "u2")
    assert (await a.join_presence(APP, "presence-small", "u3", 3, 2)).accepted


async def test_member_limit_holds_under_concurrent_joins_of_new_users(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    nodes = [a, b] * 5
    joins = await asyncio.gather(
        *(node.join_presence(APP, "presence-race", f"u{i}", i, 3) for i, node in enumerate(nodes))
    )
    assert [j.accepted for j in joins].count(True) == 3
    assert len(await a.presence_members(APP, "presence-race")) == 3


async def test_presence_leave_of_a_user_the_node_does_not_hold_changes_nothing(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.join_presence(APP, "presence-room", "u1", "info", 100)
    assert await b.leave_presence(APP, "presence-room", "u1") is False
    assert await b.leave_presence(APP, "presence-room", "nobody") is False
    assert await b.presence_members(APP, "presence-room") == {"u1": "info"}


# signed-in users


async def test_user_online_once_and_offline_once_across_nodes(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    assert await a.user_signed_in(APP, "alice") is True
    assert await b.user_signed_in(APP, "alice") is False
    assert await a.user_signed_in(APP, "alice") is False
    assert await b.user_signed_out(APP, "alice") is False
    assert await a.user_signed_out(APP, "alice") is False
    assert await a.user_signed_out(APP, "alice") is True
    assert await a.users_online(APP, ["alice"]) == set()


async def test_users_online_lists_only_users_with_a_signed_in_socket(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await a.user_signed_in(APP, "alice")
    await b.user_signed_in(APP, "bob")
    await b.user_signed_in(OTHER_APP, "carol")
    assert await a.users_online(APP, ["alice", "bob", "carol", "dave"]) == {"alice", "bob"}
    assert await a.users_online(APP, []) == set()
    assert await b.user_signed_out(APP, "nobody") is False


async def test_user_signed_in_once_under_concurrent_sign_ins(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    nodes = [a, b] * 10
    ins = await asyncio.gather(*(node.user_signed_in(APP, "alice") for node in nodes))
    assert ins.count(True) == 1
    outs = await asyncio.gather(*(node.user_signed_out(APP, "alice") for node in nodes))
    assert outs.count(True) == 1


# connections


async def test_connection_limit_counts_every_node_even_under_concurrent_connects(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    nodes = [a, b] * 15
    admitted = await asyncio.gather(*(node.add_connection(APP, 10) for node in nodes))
    assert admitted.count(True) == 10
    assert await a.add_connection(APP, 10) is False
    await nodes[admitted.index(True)].remove_connection(APP)  # a node that holds an admitted socket
    assert await a.add_connection(APP, 10) is True
    assert await a.add_connection(OTHER_APP, 10) is True  # per app


async def test_connection_limit_minus_one_means_unlimited(cluster: StateCluster) -> None:
    (a,) = await cluster.nodes("a")
    assert all([await a.add_connection(APP, -1) for _ in range(20)])
    assert await a.add_connection(APP, 0) is False


# cache channels


async def test_cache_returns_last_event_until_its_ttl_expires(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    assert await b.cache_get(APP, "cache-news") is None
    await a.cache_set(APP, "cache-news", "first", "old", 30)
    await a.cache_set(APP, "cache-news", "update", {"price": 10.5, "tags": ["a"]}, 1)
    cached = await b.cache_get(APP, "cache-news")
    assert cached is not None
    assert (cached.event, cached.data, cached.ttl) == ("update", {"price": 10.5, "tags": ["a"]}, 1)
    await asyncio.sleep(1.1)
    assert await b.cache_get(APP, "cache-news") is None


async def test_cache_reports_remaining_seconds(cluster: StateCluster) -> None:
    (a,) = await cluster.nodes("a")
    await a.cache_set(APP, "cache-long", "ev", "data", 600)
    cached = await a.cache_get(APP, "cache-long")
    assert cached is not None and 595 <= cached.ttl <= 600


# liveness, reaping, resync, withdraw


async def populate_two_nodes(a: Any, b: Any) -> None:
    """A and B share some channels, members and users; B alone holds others."""
    await a.add_connection(APP, -1)
    for _ in range(3):
        await b.add_connection(APP, -1)
    await a.join_channel(APP, "shared")
    await b.join_channel(APP, "shared")
    await b.join_channel(APP, "shared")
    await b.join_channel(APP, "only-b")
    await a.join_presence(APP, "presence-room", "u1", {"n": 1}, 100)
    await b.join_presence(APP, "presence-room", "u1", {"n": 1}, 100)
    await b.join_presence(APP, "presence-room", "u2", {"n": 2}, 100)
    await b.join_presence(APP, "presence-room", "u2", {"n": 2}, 100)
    await b.join_presence(APP, "presence-b", "u3", {"n": 3}, 100)
    await a.user_signed_in(APP, "alice")
    await b.user_signed_in(APP, "alice")
    await b.user_signed_in(APP, "bob")


EXPECTED_B_DEPARTURES = (
    {(APP, "only-b")},
    {(APP, "presence-room", "u2"), (APP, "presence-b", "u3")},
    {(APP, "bob")},
    {(APP, "shared"): 1, (APP, "only-b"): 0},
)


async def assert_only_a_remains(a: Any) -> None:
    """What the cluster holds once B's share is gone."""
    assert await a.channels(APP) == {"shared": 1}
    assert await a.presence_members(APP, "presence-room") == {"u1": {"n": 1}}
    assert await a.presence_members(APP, "presence-b") == {}
    assert await a.users_online(APP, ["alice", "bob"]) == {"alice"}
    assert await a.add_connection(APP, 2) is True  # A's one socket + this one
    assert await a.add_connection(APP, 2) is False


async def test_heartbeat_is_true_while_the_node_is_registered(cluster: StateCluster) -> None:
    (a,) = await cluster.nodes("a")
    assert await a.heartbeat() is True
    assert await a.heartbeat() is True


async def test_reaping_a_silent_node_removes_its_share_and_reports_each_transition(cluster: StateCluster) -> None:
    a, b, c = await cluster.nodes("a", "b", "c")
    await populate_two_nodes(a, b)
    await asyncio.sleep(0.3)
    await a.heartbeat()
    await c.heartbeat()
    departures = await a.reap_dead_nodes(silence=0.2)
    assert normalized(departures) == EXPECTED_B_DEPARTURES
    await assert_only_a_remains(a)
    second = await c.reap_dead_nodes(silence=0.2)
    assert normalized(second) == (set(), set(), set(), {})


async def test_reaping_spares_nodes_that_heartbeat_within_the_silence(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await populate_two_nodes(a, b)
    await b.heartbeat()
    assert normalized(await a.reap_dead_nodes(silence=5.0)) == (set(), set(), set(), {})
    assert await a.channel_subscriptions(APP, "only-b") == 1


async def test_concurrent_reapers_report_each_transition_once_between_them(cluster: StateCluster) -> None:
    a, b, c = await cluster.nodes("a", "b", "c")
    await populate_two_nodes(a, b)
    await asyncio.sleep(0.3)
    await a.heartbeat()
    await c.heartbeat()
    first, second = await asyncio.gather(a.reap_dead_nodes(silence=0.2), c.reap_dead_nodes(silence=0.2))
    merged = Departures(
        vacated=first.vacated + second.vacated,
        members_removed=first.members_removed + second.members_removed,
        users_offline=first.users_offline + second.users_offline,
        counts={**first.counts, **second.counts},
    )
    assert normalized(merged) == EXPECTED_B_DEPARTURES


async def test_heartbeat_is_false_after_the_node_was_reaped_and_resync_brings_it_back(
    cluster: StateCluster,
) -> None:
    a, b = await cluster.nodes("a", "b")
    await b.join_channel(APP, "only-b")
    await asyncio.sleep(0.3)
    await a.heartbeat()
    await a.reap_dead_nodes(silence=0.2)
    assert await b.heartbeat() is False
    await b.resync(NodeSnapshot(channels={(APP, "only-b"): 1}))
    assert await b.heartbeat() is True
    assert await a.channels(APP) == {"only-b": 1}


async def test_resync_replaces_the_nodes_share_and_leaves_others_alone(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await populate_two_nodes(a, b)
    snapshot = NodeSnapshot(
        connections={APP: 1},
        channels={(APP, "shared"): 1, (APP, "new"): 4},
        presence={(APP, "presence-room"): {"u1": (1, {"n": 1}), "u9": (2, {"n": 9})}},
        users={(APP, "carol"): 1},
    )
    await b.resync(snapshot)
    assert await a.channels(APP) == {"shared": 2, "new": 4}
    assert await a.presence_members(APP, "presence-room") == {"u1": {"n": 1}, "u9": {"n": 9}}
    assert await a.presence_members(APP, "presence-b") == {}
    assert await a.users_online(APP, ["alice", "bob", "carol"]) == {"alice", "carol"}
    assert await a.add_connection(APP, 3) is True  # 1 (A) + 1 (B) + this one
    assert await a.add_connection(APP, 3) is False
    # B's new share is exact: its sockets leave one by one and the counts reach zero exactly then.
    assert await b.leave_presence(APP, "presence-room", "u9") is False
    assert await b.leave_presence(APP, "presence-room", "u9") is True
    assert await b.leave_channel(APP, "shared") == 1
    assert await b.leave_channel(APP, "shared") == 1  # B held only one socket there now


async def test_resync_twice_with_the_same_snapshot_changes_nothing(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    snapshot = NodeSnapshot(channels={(APP, "room"): 2}, presence={(APP, "presence-x"): {"u": (1, "i")}})
    await b.resync(snapshot)
    await b.resync(snapshot)
    assert await a.channels(APP) == {"room": 2}
    assert await a.presence_members(APP, "presence-x") == {"u": "i"}


async def test_withdraw_removes_the_nodes_share_and_reports_each_transition(cluster: StateCluster) -> None:
    a, b = await cluster.nodes("a", "b")
    await populate_two_nodes(a, b)
    departures = await b.withdraw()
    assert normalized(departures) == EXPECTED_B_DEPARTURES
    await assert_only_a_remains(a)
    assert normalized(await a.reap_dead_nodes(silence=0.0)) == (set(), set(), set(), {})

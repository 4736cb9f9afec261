"""Redis topology URLs, cluster slots, and the replay buffer's pure merging rules."""

from __future__ import annotations

import pytest

from hub.apps import ConfigError
from hub.broker.replay import ZERO, format_id, merge, parse_id, split_frame, stream_entries, stream_key, topic_name
from hub.config import parse_settings
from hub.redis_connection import RedisUrlError
from hub.redis_topology import CLUSTER, SENTINEL, SINGLE, key_slot, parse_topology


def test_plain_urls_are_single_server_topologies() -> None:
    topology = parse_topology("redis://:pw@cache:6380/2")
    assert topology.kind == SINGLE
    assert (topology.targets[0].host, topology.targets[0].port, topology.targets[0].db) == ("cache", 6380, 2)


def test_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    topology = parse_topology("redis+sentinel://app:pw@s1:26379,s2:26380/mymaster/3?sentinel_password=sp")
    assert topology.kind == SENTINEL
    assert topology.service == "mymaster"
    assert [(t.host, t.port) for t in topology.targets] == [("s1", 26379), ("s2", 26380)]
    assert {(t.username, t.password, t.db) for t in topology.targets} == {("app", "pw", 3)}
    assert topology.sentinel_password == "sp"
    assert "pw" not in topology.address and "sp" not in topology.address


def test_cluster_url_lists_seeds_and_keeps_tls_options_for_every_node() -> None:
    topology = parse_topology("rediss+cluster://:pw@n1:7000,[::1]:7001?ssl_cert_reqs=none")
    assert topology.kind == CLUSTER
    assert [(t.host, t.port) for t in topology.targets] == [("n1", 7000), ("::1", 7001)]
    assert all(t.tls and t.ssl_cert_reqs == "none" and t.password == "pw" for t in topology.targets)
    discovered = topology.at("10.0.0.5", 7005)
    assert (discovered.host, discovered.port, discovered.tls, discovered.password) == ("10.0.0.5", 7005, True, "pw")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://s1:26379", "needs /<service-name>"),
        ("redis+sentinel://s1/mymaster", "needs a port"),
        ("redis+cluster://n1:7000/1", "only database 0"),
        ("redis+cluster://n1:7000?db=2", "only database 0"),
        ("redis+cluster://n1:7000,,n2:7001", "empty host"),
        ("redis+cluster://n1:7000?sentinel_password=x", "only apply to redis\\+sentinel"),
        ("memcached://h:1", "must start with"),
        ("redis+cluster://n1:99999", "needs a port"),
    ],
)
def test_unusable_topology_urls_are_refused_naming_the_problem(url: str, complaint: str) -> None:
    with pytest.raises(RedisUrlError, match=complaint):
        parse_topology(url)


def test_a_bad_redis_url_stops_start_up_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--redis-url: redis\\+cluster:// URL takes no path"):
        parse_settings(["ws", "--redis-url", "redis+cluster://n1:7000/0"], {})


@pytest.mark.parametrize(
    ("key", "slot"),
    [(b"foo", 12182), (b"{user1000}.following", 3443), (b"hub:1:chan", 4173), (b"{hub:1:chan}:replay", 4173)],
)
def test_key_slot_matches_redis_cluster_keyslot(key: bytes, slot: int) -> None:
    # The values are what `CLUSTER KEYSLOT` answers (checked against redis-server 7.0).
    assert key_slot(key) == slot


def test_empty_or_unclosed_hash_tags_hash_the_whole_key() -> None:
    assert key_slot(b"{}x") != key_slot(b"x")
    assert key_slot(b"{abc") == key_slot(b"{abc")
    assert key_slot(b"a{b}c") == key_slot(b"b")


def test_a_topic_and_its_replay_stream_share_one_slot_and_channels_of_an_app_do_not() -> None:
    topic = topic_name("hub", "1", "private-chat.1.2")
    assert key_slot(stream_key(topic)) == key_slot(topic)
    slots = {key_slot(topic_name("hub", "1", f"room-{i}")) for i in range(100)}
    assert len(slots) > 90


def test_frames_carry_their_stream_id_and_envelopes_without_one_pass_through() -> None:
    assert split_frame(b"R1700000000000-3\n\x99payload") == ((1700000000000, 3), b"\x99payload")
    assert split_frame(b"\x99plain") == (None, b"\x99plain")
    assert parse_id(format_id((12, 7))) == (12, 7)


def test_stream_replies_become_id_envelope_pairs() -> None:
    reply = [[b"5-0", [b"m", b"a"]], [b"5-1", [b"other", b"x", b"m", b"b"]], [b"6-0", [b"x", b"y"]]]
    assert stream_entries(reply) == [((5, 0), b"a"), ((5, 1), b"b")]
    assert stream_entries(None) == []


def test_merge_after_a_gap_delivers_stored_and_live_events_once_in_stream_order() -> None:
    stored = [((1, 0), b"old"), ((2, 0), b"b"), ((3, 0), b"c")]
    live = [((3, 0), b"c"), ((4, 0), b"d")]
    assert merge((1, 0), stored, live) == ([b"b", b"c", b"d"], (4, 0))


def test_merge_of_a_fresh_subscription_delivers_only_live_events() -> None:
    stored = [((9, 0), b"before-subscribing")]
    assert merge(None, stored, [((10, 0), b"new")]) == ([b"new"], (10, 0))
    assert merge(None, stored, []) == ([], None)


def test_merge_never_goes_back_before_the_floor() -> None:
    assert merge((5, 0), [((4, 0), b"x")], [((3, 0), b"y")]) == ([], (5, 0))
    assert merge(ZERO, [], []) == ([], ZERO)

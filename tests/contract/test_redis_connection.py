"""Reaching Redis from a URL: parsing, passwords, ACL users, database numbers and TLS (rediss://)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from hub.broker.envelope import event_envelope
from hub.broker.redis import RedisBroker
from hub.redis_connection import RedisTarget, RedisUrlError, parse_redis_url
from hub.state.base import StateUnavailable
from hub.state.redis import RedisClusterState
from tests.contract.conftest import TIMEOUT, Inbox, eventually
from tests.support.certificates import make_certificates
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.requirements import require, require_executable

APP = "1"

# parsing


def test_plain_url_gives_host_port_and_db() -> None:
    assert parse_redis_url("redis://cache.internal:6380/2") == RedisTarget(host="cache.internal", port=6380, db=2)


def test_url_defaults_are_localhost_6379_db_0() -> None:
    assert parse_redis_url("redis://") == RedisTarget()


def test_password_and_user_are_percent_decoded() -> None:
    target = parse_redis_url("redis://hub%40prod:p%40ss%3Aw%2Frd@h:1/0")
    assert (target.username, target.password) == ("hub@prod", "p@ss:w/rd")


def test_password_without_user() -> None:
    target = parse_redis_url("redis://:secret@h")
    assert (target.username, target.password) == (None, "secret")


def test_db_query_option_wins_over_path() -> None:
    assert parse_redis_url("redis://h/1?db=5").db == 5


def test_rediss_verifies_certificates_and_host_by_default() -> None:
    target = parse_redis_url("rediss://h:6380")
    assert (target.tls, target.ssl_cert_reqs, target.ssl_check_hostname) == (True, "required", True)


def test_rediss_options_are_read_from_the_query() -> None:
    target = parse_redis_url(
        "rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_check_hostname=false"
    )
    assert (target.ssl_cert_reqs, target.ssl_ca_certs, target.ssl_certfile, target.ssl_keyfile) == (
        "none",
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert target.ssl_check_hostname is False


def test_unix_socket_url() -> None:
    target = parse_redis_url("unix:///run/redis/redis.sock?db=3")
    assert (target.unix_path, target.db) == ("/run/redis/redis.sock", 3)


def test_address_for_logs_never_shows_the_password() -> None:
    assert "secret" not in parse_redis_url("redis://user:secret@h:1/0").address


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://h", "must start with redis://"),
        ("redis://h/x", "database must be a number"),
        ("redis://h?db=-1", "must not be negative"),
        ("redis://h?timeout=3", "unknown Redis URL option"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("rediss://h?ssl_check_hostname=perhaps", "true or false"),
        ("redis://h:99999", "port"),
        ("unix://", "socket path"),
    ],
)
def test_unusable_urls_are_refused_with_a_reason(url: str, complaint: str) -> None:
    with pytest.raises(RedisUrlError, match=complaint):
        parse_redis_url(url)


# real servers


@pytest.fixture
def secured_server() -> Iterator[RedisServer]:
    """A redis-server with a default-user password and an ACL user ``hub`` (password ``hub-pass``)."""
    require_executable("redis-server")
    acl = ["--user", "hub", "on", ">hub-pass", "~*", "&*", "+@all"]
    with RedisServer(password="s3cret", extra_args=acl) as server:
        yield server


async def exercise(url: str, prefix: str) -> None:
    """Use the broker and the state through ``url``: a publish comes back, a join is counted."""
    inbox = Inbox()
    broker = RedisBroker(url, prefix, "node", timeout=TIMEOUT)
    state = RedisClusterState(url, prefix, "node", timeout=TIMEOUT)
    try:
        await broker.start(inbox, [APP])
        assert broker.healthy
        await broker.subscribe(APP, "news")
        await broker.publish(event_envelope(APP, "news", "ev", "{}", origin_node="node"))
        await eventually(lambda: inbox.events() == ["ev"])
        await state.start()
        assert await state.join_channel(APP, "news") == 1
    finally:
        await broker.close()
        await state.close()


async def assert_unusable(url: str, prefix: str) -> None:
    """Through ``url`` a broker starts but stays unhealthy, and a state's start raises ``StateUnavailable``."""
    broker = RedisBroker(url, prefix, "node", timeout=0.3)
    state = RedisClusterState(url, prefix, "node", timeout=TIMEOUT)
    try:
        await broker.start(Inbox(), [APP])
        assert not broker.healthy
        with pytest.raises(StateUnavailable):
            await state.start()
    finally:
        await broker.close()
        await state.close()


async def test_password_in_the_url_authenticates(secured_server: RedisServer, prefix: str) -> None:
    await exercise(secured_server.url, prefix)


async def test_acl_user_and_password_in_the_url_authenticate(secured_server: RedisServer, prefix: str) -> None:
    await exercise(f"redis://hub:hub-pass@127.0.0.1:{secured_server.port}/0", prefix)


async def test_wrong_password_leaves_broker_unhealthy_and_state_unavailable(
    secured_server: RedisServer, prefix: str
) -> None:
    await assert_unusable(f"redis://:wrong@127.0.0.1:{secured_server.port}/0", prefix)


@pytest.mark.parametrize("url_suffix", ["/3", "?db=3"])
async def test_database_number_in_the_url_holds_the_state(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str, url_suffix: str
) -> None:
    state = RedisClusterState(f"redis://127.0.0.1:{redis_server.port}{url_suffix}", prefix, "a")
    db3 = aioredis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    try:
        await state.start()
        await state.join_channel(APP, "in-db-3")
        assert await db3.hget(f"{{{prefix}:{APP}}}:channels", "in-db-3") == b"1"
        assert await redis_client.exists(f"{{{prefix}:{APP}}}:channels") == 0
    finally:
        await db3.aclose()
        await state.close()


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A redis-server that also listens with TLS; yields its TLS port and the CA file."""
    require_executable("redis-server")
    files = make_certificates(tmp_path)
    tls_port = free_port()
    tls = ["--tls-port", str(tls_port), "--tls-cert-file", str(files["server"])]
    tls += ["--tls-key-file", str(files["server-key"]), "--tls-ca-cert-file", str(files["ca"])]
    tls += ["--tls-auth-clients", "no"]
    server = RedisServer(extra_args=tls)
    try:
        server.start()
    except Exception as exc:  # a redis-server built without TLS refuses the options
        server.close()
        require(False, f"redis-server cannot serve TLS here: {exc}")
    yield {"port": tls_port, "ca": files["ca"]}
    server.close()


async def test_rediss_url_with_the_servers_ca_works(tls_server: dict[str, Any], prefix: str) -> None:
    await exercise(f"rediss://127.0.0.1:{tls_server['port']}/0?ssl_ca_certs={tls_server['ca']}", prefix)


async def test_rediss_refuses_a_server_certificate_it_cannot_verify(tls_server: dict[str, Any], prefix: str) -> None:
    url = f"rediss://127.0.0.1:{tls_server['port']}/0"  # system CAs only: the test CA is unknown
    await assert_unusable(url, prefix)

"""Which Redis deployment hub uses and how to reach its primaries: the one topology layer of broker/ and state/.

A Redis URL names one of three topologies:

- **single**: ``redis://``, ``rediss://`` or ``unix://`` (see ``hub.redis_connection``): one server.
- **sentinel**: ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>[/db][?options]`` (``rediss+sentinel``
  for TLS to the data servers): the sentinels are asked which server is the primary of ``<service>``, again
  after every connection loss, so a failover is followed. The credentials are the data servers'; options
  ``sentinel_username``/``sentinel_password`` authenticate to the sentinels when they require it.
- **cluster**: ``redis+cluster://[user:pass@]h1:7000,h2:7001[?options]`` (``rediss+cluster`` for TLS): seed
  nodes of a Redis Cluster; the other nodes and the slot map are discovered with ``CLUSTER SLOTS``.

Commands go through redis-py (``command_client``: ``Redis``, a Sentinel-managed ``Redis``, or ``RedisCluster``,
which all share the command API state/ uses). The broker speaks RESP itself for speed and asks this module
where the primaries are (``discover_primary``, ``cluster_slots``) and which slot a name hashes to (``key_slot``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.redis_connection import RedisTarget, RedisUrlError, create_client, open_connection, parse_redis_url
from hub.redis_resp import RespError, RespProtocol

SLOTS = 16384
SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
_MULTI_SCHEMES = {
    "redis+sentinel": (SENTINEL, "redis"),
    "rediss+sentinel": (SENTINEL, "rediss"),
    "redis+cluster": (CLUSTER, "redis"),
    "rediss+cluster": (CLUSTER, "rediss"),
}
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
CommandClient = aioredis.Redis | RedisCluster
_DISCOVERY_ERRORS = (OSError, TimeoutError, RespError)


@dataclass(frozen=True, slots=True)
class RedisTopology:
    """A parsed Redis URL: the kind of deployment and the servers to start from.

    ``targets`` are the single server, the sentinels, or the cluster's seed nodes; every target carries the
    data servers' credentials, database and TLS settings, so a discovered primary is reached the same way.
    """

    kind: str
    targets: tuple[RedisTarget, ...]
    service: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def address(self) -> str:
        """Where the deployment is, without credentials (safe to log and to show in metrics)."""
        if self.kind == SINGLE:
            return self.targets[0].address
        hosts = ",".join(f"{t.host}:{t.port}" for t in self.targets)
        scheme = ("rediss+" if self.targets[0].tls else "redis+") + self.kind
        return f"{scheme}://{hosts}" + (f"/{self.service}" if self.service else "")

    @property
    def sentinels(self) -> tuple[RedisTarget, ...]:
        """The sentinels to ask, with the sentinels' own credentials (plain TCP: sentinels speak no TLS here)."""
        return tuple(
            replace(t, tls=False, username=self.sentinel_username, password=self.sentinel_password)
            for t in self.targets
        )

    def at(self, host: str, port: int) -> RedisTarget:
        """A data server discovered at ``host:port``, reached with this deployment's credentials and TLS."""
        return replace(self.targets[0], host=host, port=port, unix_path=None)

    def command_client(self, *, timeout: float, name: str | None = None, max_connections: int = 64) -> CommandClient:
        """A redis-py asyncio client for commands whose every call fails within about ``timeout``.

        Single: a plain client. Sentinel: a client whose connections go to the current primary (redis-py asks
        the sentinels on every new connection and drops a connection that finds a demoted primary). Cluster: a
        RedisCluster that routes each command by its key's slot and follows MOVED/ASK and failovers.
        """
        if self.kind == SINGLE:
            return create_client(self.targets[0], timeout=timeout, name=name, max_connections=max_connections)
        first = self.targets[0]
        common: dict[str, Any] = {
            "username": first.username,
            "password": first.password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "client_name": name,
        }
        if first.tls:
            common.update(
                ssl=True,
                ssl_cert_reqs=first.ssl_cert_reqs,
                ssl_ca_certs=first.ssl_ca_certs,
                ssl_certfile=first.ssl_certfile,
                ssl_keyfile=first.ssl_keyfile,
                ssl_check_hostname=first.ssl_check_hostname and first.ssl_cert_reqs != "none",
            )
        if self.kind == SENTINEL:
            assert self.service is not None
            sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
            if self.sentinel_password is not None:
                sentinel_kwargs.update(username=self.sentinel_username, password=self.sentinel_password)
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                [(t.host, t.port) for t in self.targets],
                sentinel_kwargs=sentinel_kwargs,
                db=first.db,
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError],
                max_connections=max_connections,
                **common,
            )
            client: aioredis.Redis = sentinel.master_for(self.service)
            return client
        return RedisCluster(
            startup_nodes=[ClusterNode(t.host, t.port) for t in self.targets],
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 1),
            **common,
        )


def _split_hosts(netloc: str, url: str) -> tuple[str, list[tuple[str, int]]]:
    """``user:pass@h1:p1,h2:p2`` -> (the credentials part with its '@', [(host, port), ...])."""
    credentials, _, hosts = netloc.rpartition("@")
    found: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise RedisUrlError(f"empty host in Redis URL {_safe(url)!r}")
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RedisUrlError(f"each host of {_safe(url)!r} needs a port between 1 and 65535, not {item!r}")
        found.append((host, int(port_text)))
    return (credentials + "@") if credentials else "", found


def _safe(url: str) -> str:
    """The URL without its credentials, for error messages."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2]


def parse_topology(url: str) -> RedisTopology:
    """Parse any Redis URL hub accepts into a RedisTopology; raise RedisUrlError naming what is wrong."""
    scheme = url.partition("://")[0].lower()
    if scheme not in _MULTI_SCHEMES:
        if "://" in url and scheme not in ("redis", "rediss", "unix"):
            raise RedisUrlError(
                "Redis URL must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://, "
                f"not {scheme + '://'!r}"
            )
        return RedisTopology(SINGLE, (parse_redis_url(url),))
    kind, data_scheme = _MULTI_SCHEMES[scheme]
    parts = urlsplit(url)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    sentinel_auth = {name: query.pop(name) for name in _SENTINEL_OPTIONS if name in query}
    if kind == CLUSTER and sentinel_auth:
        raise RedisUrlError(f"{', '.join(sentinel_auth)} only apply to redis+sentinel:// URLs")
    credentials, hosts = _split_hosts(parts.netloc, url)
    path = [segment for segment in parts.path.split("/") if segment]
    service: str | None = None
    db_path = ""
    if kind == SENTINEL:
        if not path or len(path) > 2:
            raise RedisUrlError("redis+sentinel:// URL needs /<service-name> and optionally /<db> after the hosts")
        service = path[0]
        db_path = "/" + path[1] if len(path) == 2 else ""
    elif path:
        raise RedisUrlError("redis+cluster:// URL takes no path: a Redis Cluster has only database 0")
    if kind == CLUSTER and query.get("db", "0") != "0":
        raise RedisUrlError("redis+cluster:// URL cannot select a database: a Redis Cluster has only database 0")
    rest = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    targets = tuple(
        parse_redis_url(
            f"{data_scheme}://{credentials}{_host_text(host)}:{port}{db_path}" + (f"?{rest}" if rest else "")
        )
        for host, port in hosts
    )
    return RedisTopology(
        kind,
        targets,
        service=service,
        sentinel_username=sentinel_auth.get("sentinel_username"),
        sentinel_password=sentinel_auth.get("sentinel_password"),
    )


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Slots: CRC16/XMODEM of the key, or of its hash tag (the text between the first "{" and the next "}").
def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: bytes) -> int:
    """The Redis Cluster slot of ``key`` (what ``CLUSTER KEYSLOT`` answers)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    for byte in key:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


# Discovery over raw RESP connections (the broker's), so it needs no redis-py client of its own.


async def _ask(target: RedisTarget, attempt_timeout: float, *command: bytes) -> Any:
    """Open a short connection to ``target``, authenticate with its credentials, run one command, close."""
    _, conn = await open_connection(target, RespProtocol, connect_timeout=attempt_timeout)
    try:
        async with asyncio.timeout(attempt_timeout):
            await conn.authenticate(target.username, target.password)
            return await conn.request(*command)
    finally:
        conn.abort()


async def discover_primary(topology: RedisTopology, attempt_timeout: float) -> RedisTarget:
    """Where the primary is now: the single server, or what the first answering sentinel says.

    Raises OSError (ConnectionError) when no sentinel answers or none knows the service.
    """
    if topology.kind == SINGLE:
        return topology.targets[0]
    assert topology.kind == SENTINEL and topology.service is not None
    errors: list[str] = []
    for sentinel in topology.sentinels:
        try:
            reply = await _ask(
                sentinel, attempt_timeout, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", topology.service.encode()
            )
        except _DISCOVERY_ERRORS as exc:  # a sentinel that is down or refuses: ask the next
            errors.append(f"{sentinel.host}:{sentinel.port}: {exc!r}")
            continue
        if isinstance(reply, list) and len(reply) == 2:
            return topology.at(reply[0].decode(), int(reply[1]))
        errors.append(f"{sentinel.host}:{sentinel.port}: does not know service {topology.service!r}")
    raise ConnectionError("no sentinel named the primary: " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class SlotRange:
    """Slots ``start..end`` (inclusive) and the primary that serves them."""

    start: int
    end: int
    primary: RedisTarget


async def cluster_slots(
    topology: RedisTopology, attempt_timeout: float, known: Sequence[RedisTarget] = ()
) -> list[SlotRange]:
    """The slot map, from the first of ``known`` (then the seeds) that answers ``CLUSTER SLOTS``.

    Raises ConnectionError when no node answers.
    """
    errors: list[str] = []
    tried: set[tuple[str, int]] = set()
    for node in [*known, *topology.targets]:
        if (node.host, node.port) in tried:
            continue
        tried.add((node.host, node.port))
        try:
            reply = await _ask(node, attempt_timeout, b"CLUSTER", b"SLOTS")
        except _DISCOVERY_ERRORS as exc:  # a dead node: the next one may answer
            errors.append(f"{node.host}:{node.port}: {exc!r}")
            continue
        ranges: list[SlotRange] = []
        for entry in reply:
            host = entry[2][0].decode() or node.host  # an empty host means "the node you asked"
            ranges.append(SlotRange(int(entry[0]), int(entry[1]), topology.at(host, int(entry[2][1]))))
        if ranges:
            return sorted(ranges, key=lambda r: r.start)
        errors.append(f"{node.host}:{node.port}: serves no slots")
    raise ConnectionError("no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

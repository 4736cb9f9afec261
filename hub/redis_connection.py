"""Where Redis is and how to reach it: parse a Redis URL once, then open clients and raw connections from it.

Supported URLs (the same forms redis-py and redis-cli accept):

- ``redis://[[user]:password@]host[:port][/db]``
- ``rediss://...`` for TLS; query options ``ssl_cert_reqs=none|optional|required`` (default required),
  ``ssl_ca_certs=/path/ca.pem``, ``ssl_certfile=``, ``ssl_keyfile=`` (client certificate) and
  ``ssl_check_hostname=true|false`` (default true when certificates are verified)
- ``unix:///path/to/redis.sock[?db=N]``

``db`` may also be given as a query option. The state's redis-py client and the broker's raw connections
are built from one parsed ``RedisTarget``, so they always agree on where they go. (Pub/sub ignores the
database number: channels are global to the server, which is why keys and channels carry the prefix.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_PORT = 6379

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

P = TypeVar("P", bound=asyncio.BaseProtocol)


class RedisUrlError(ValueError):
    """A Redis URL hub cannot use; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One Redis server and the credentials and TLS settings to talk to it."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @property
    def address(self) -> str:
        """Where the server is, without credentials (safe to log)."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``rediss://`` (None for plain connections)."""
        if not self.tls:
            return None
        context = ssl.create_default_context()
        verify = _CERT_REQS[self.ssl_cert_reqs]
        # check_hostname must be switched off before verify_mode may become CERT_NONE.
        context.check_hostname = self.ssl_check_hostname and verify != ssl.CERT_NONE
        context.verify_mode = verify
        if self.ssl_certfile or self.ssl_keyfile:
            context.load_cert_chain(certfile=self.ssl_certfile or "", keyfile=self.ssl_keyfile)
        if self.ssl_ca_certs:
            context.load_verify_locations(cafile=self.ssl_ca_certs)
        return context


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise RedisUrlError(f"Redis URL option {name} must be true or false, not {value!r}")


def _db(value: str) -> int:
    try:
        db = int(value)
    except ValueError:
        raise RedisUrlError(f"Redis URL database must be a number, not {value!r}") from None
    if db < 0:
        raise RedisUrlError(f"Redis URL database must not be negative, not {db}")
    return db


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``redis://``, ``rediss://`` or ``unix://`` into a RedisTarget; raise RedisUrlError if unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisUrlError(f"Redis URL must start with redis://, rediss:// or unix://, not {url.split(':')[0]!r}")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    known = {"db", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise RedisUrlError(f"unknown Redis URL option(s): {', '.join(unknown)}")

    db = 0
    if "db" in query:
        db = _db(query["db"])
    elif scheme != "unix" and parts.path.strip("/"):
        db = _db(unquote(parts.path.strip("/")))

    cert_reqs = query.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in _CERT_REQS:
        raise RedisUrlError(f"ssl_cert_reqs must be none, optional or required, not {cert_reqs!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise RedisUrlError("Redis URL port must be a number between 0 and 65535") from None
    if scheme == "unix" and not parts.path:
        raise RedisUrlError("unix:// Redis URL needs a socket path")
    return RedisTarget(
        host=unquote(parts.hostname) if parts.hostname else "localhost",
        port=port,
        unix_path=unquote(parts.path) if scheme == "unix" else None,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme == "rediss",
        ssl_cert_reqs=cert_reqs,
        ssl_ca_certs=query.get("ssl_ca_certs"),
        ssl_certfile=query.get("ssl_certfile"),
        ssl_keyfile=query.get("ssl_keyfile"),
        ssl_check_hostname=_flag("ssl_check_hostname", query["ssl_check_hostname"])
        if "ssl_check_hostname" in query
        else True,
    )


def create_client(
    target: RedisTarget, *, timeout: float, name: str | None = None, max_connections: int = 64
) -> aioredis.Redis:
    """A redis-py asyncio client whose every command fails within about ``timeout``.

    The pool blocks (up to ``timeout``) instead of failing when all ``max_connections`` are busy, so a
    burst of concurrent commands queues briefly rather than erroring or opening thousands of sockets.
    Retries are limited to one immediate retry on a connection error: that absorbs a pooled connection
    the server closed (e.g. after a Redis restart) without ever doubling a timeout, so callers can turn
    any failure into "unavailable" quickly instead of hanging behind redis-py's default backoff.
    """
    kwargs: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
        "client_name": name,
    }
    connection_class: type[AbstractConnection]
    if target.unix_path is not None:
        connection_class = UnixDomainSocketConnection
        kwargs["path"] = target.unix_path
    else:
        kwargs.update(host=target.host, port=target.port)
        connection_class = Connection
        if target.tls:
            connection_class = SSLConnection
            kwargs.update(
                ssl_cert_reqs=target.ssl_cert_reqs,
                ssl_ca_certs=target.ssl_ca_certs,
                ssl_certfile=target.ssl_certfile,
                ssl_keyfile=target.ssl_keyfile,
                ssl_check_hostname=target.ssl_check_hostname and target.ssl_cert_reqs != "none",
            )
    pool = BlockingConnectionPool(
        max_connections=max_connections, timeout=timeout, connection_class=connection_class, **kwargs
    )
    return aioredis.Redis.from_pool(pool)


async def open_connection(
    target: RedisTarget, protocol_factory: Callable[[], P], *, connect_timeout: float
) -> tuple[asyncio.Transport, P]:
    """Open a raw transport to the server (TCP, TLS or unix socket) driven by ``protocol_factory``'s protocol.

    Used for the broker's connections, which parse RESP themselves for speed; authentication is the
    protocol's first exchange, not done here.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        if target.unix_path is not None:
            transport, protocol = await loop.create_unix_connection(protocol_factory, target.unix_path)
        else:
            context = target.ssl_context()
            transport, protocol = await loop.create_connection(
                protocol_factory,
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
    return transport, protocol

"""Connecting to Redis: connection options, Sentinel URLs, and connections that pack commands
with hiredis and write them without a task per write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

_MAX_CONNECTIONS = 64
_POOL_WAIT = 5.0


class _HiredisPacking:
    """``pack_command`` through hiredis's C packer.

    redis-py packs commands in Python on its asyncio connections (its sync ones already use
    hiredis): a few microseconds per argument, and a turn's scripts carry a dozen arguments and
    the session JSON. The result is the same RESP bytes.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as err:
            raise DataError(str(err)) from err


class _DeadlineWrite(AbstractConnection):
    """``send_packed_command`` with the write's deadline kept by ``asyncio.timeout``.

    redis-py keeps it with ``asyncio.wait_for``, which on Python 3.11 runs every write in a task
    of its own (about a fifth of an auto-pipelined batch's CPU) and can swallow a cancellation
    that lands as the write finishes. Otherwise redis-py's method: the same health check, errors
    and disconnects.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.socket_timeout:
            await super().send_packed_command(command, check_health)
            return
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(self.socket_timeout):
                await self._send_packed_command(command)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as err:
            await self.disconnect(nowait=True)
            err_no, errmsg = err.args[:2] if len(err.args) > 1 else ("UNKNOWN", err)
            msg = f"Error {err_no} while writing to socket. {errmsg}."
            raise RedisConnectionError(msg) from err
        except BaseException:
            # Cancelled mid-write: what went out is unknown, so the connection is not reused.
            await self.disconnect(nowait=True)
            raise


class _Connection(_HiredisPacking, _DeadlineWrite, Connection):
    pass


class _SSLConnection(_HiredisPacking, _DeadlineWrite, SSLConnection):
    pass


class _UnixConnection(_HiredisPacking, _DeadlineWrite, UnixDomainSocketConnection):
    pass


class _SentinelConnection(_HiredisPacking, _DeadlineWrite, SentinelManagedConnection):
    pass


_FAST_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
    SentinelManagedConnection: _SentinelConnection,
}


def _pack_fast(pool: ConnectionPool) -> None:
    """Let the pool's new connections pack commands with hiredis and write without a task."""
    pool.connection_class = _FAST_PACKING.get(pool.connection_class, pool.connection_class)


def _connection_options() -> dict[str, Any]:
    """Options that make a client survive a Redis restart or a dropped connection."""
    return {
        "decode_responses": False,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 15,
        # A few quick retries ride over a dropped connection or a failover; a longer outage
        # surfaces as StoreUnavailable and the next message tries again.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any]]:
    """Read ``redis+sentinel://[user:pass@]host:port[,host:port]/service[/db]``.

    Returns the sentinel addresses, the service name, the database and the master's credentials.
    ``?sentinel_password=`` sets a separate password for the sentinels themselves.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        msg = "expected a redis+sentinel:// URL"
        raise ValueError(msg)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    auth: dict[str, Any] = {}
    if userinfo:
        user, has_pw, password = userinfo.partition(":")
        if has_pw:
            auth["password"] = unquote(password)
            if user:
                auth["username"] = unquote(user)
        else:
            auth["password"] = unquote(user)  # redis+sentinel://secret@host form
    hosts: list[tuple[str, int]] = []
    for item in filter(None, hostlist.split(",")):
        host, port = item, "26379"
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            msg = "sentinel URL has a bad host:port"
            raise ValueError(msg)
        hosts.append((host, int(port)))
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not hosts or not segments or len(segments) > 2:
        msg = "expected redis+sentinel://host:port[,host:port]/service_name[/db]"
        raise ValueError(msg)
    if len(segments) == 2 and not segments[1].isdigit():
        msg = "sentinel URL database must be a number"
        raise ValueError(msg)
    db = int(segments[1]) if len(segments) == 2 else 0
    query = parse_qs(parts.query)
    if "sentinel_password" in query:
        auth["sentinel_password"] = query["sentinel_password"][0]
    return hosts, segments[0], db, auth


def connect(url: str) -> tuple[Redis, Sentinel | None]:
    """A lazily connecting client for a redis://, rediss://, unix:// or redis+sentinel:// URL,
    and the sentinel connections when the URL names sentinels (closed with the client)."""
    options = _connection_options()
    if url.startswith("redis+sentinel://"):
        hosts, service, db, auth = parse_sentinel_url(url)
        sentinel_password = auth.pop("sentinel_password", None)
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        }
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, sentinel_kwargs=sentinel_kwargs, **options, **auth
        )
        master = sentinel.master_for(service, db=db)
        _pack_fast(master.connection_pool)
        return master, sentinel
    # A blocking pool makes a burst wait for a free connection instead of failing with
    # "Too many connections" (the default pool raises at its limit).
    pool = BlockingConnectionPool.from_url(
        url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_WAIT, **options
    )
    _pack_fast(pool)
    return Redis.from_pool(pool), None

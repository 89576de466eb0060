"""Where a Redis server is, from its URL: the `--redis` setting, checked without connecting (and without
importing txredisapi, which installs a reactor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEME = "redis-sentinel"


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis listens and how to log in to it, from a `redis://` or `rediss://` (TLS) URL; or, from a
    `redis-sentinel://` URL, the Sentinels to ask where the master of `service` is (`host` and `port` are then
    the first Sentinel's)."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None

    def __str__(self) -> str:
        if self.sentinels:
            hosts = ",".join(f"{_bracketed(host)}:{port}" for host, port in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{_bracketed(self.host)}:{self.port}/{self.db}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def redis_url(value: Any) -> str:
    """A `redis://`, `rediss://` or `redis-sentinel://` URL setting, checked as `parse_redis_url` checks it."""
    if not isinstance(value, str):
        raise ValueError("expected a redis://, rediss:// or redis-sentinel:// URL")
    parse_redis_url(value)
    return value


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, or
    `redis-sentinel://[[user]:password@]sentinel[:port][,sentinel[:port]...]/service[/db]` (the login is the
    master's); `ValueError` says what is wrong, without the password."""
    parts = urlsplit(url.strip())
    shown = _without_password(url.strip())
    if parts.scheme not in ("redis", "rediss", SENTINEL_SCHEME):
        raise ValueError(
            f"{shown!r} is not a Redis URL: expected redis://host:port/db, rediss://... or "
            "redis-sentinel://sentinel:26379/service/db"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{shown!r}: a Redis URL takes no options after ? or #")
    login, _, hosts = parts.netloc.rpartition("@")
    user, _, secret = login.partition(":")
    username = unquote(user) or None
    password = unquote(secret) if ":" in login else None
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if parts.scheme == SENTINEL_SCHEME:
        if not path or not path[0]:
            raise ValueError(
                f"{shown!r} names no service: expected redis-sentinel://sentinel:26379/service/db"
            )
        if len(path) > 2:
            raise ValueError(f"{shown!r}: expected redis-sentinel://sentinel:26379/service/db")
        sentinels = tuple(_host_port(part, DEFAULT_SENTINEL_PORT, shown) for part in hosts.split(","))
        return RedisAddress(
            host=sentinels[0][0],
            port=sentinels[0][1],
            db=_db(path[1] if len(path) > 1 else "0", shown),
            sentinels=sentinels,
            service=unquote(path[0]),
            username=username,
            password=password,
        )
    if len(path) > 1:
        raise ValueError(f"{shown!r}: expected redis://host:port/db")
    host, port = _host_port(hosts, DEFAULT_PORT, shown)
    return RedisAddress(
        host=host,
        port=port,
        db=_db(path[0] if path else "0", shown),
        tls=parts.scheme == "rediss",
        username=username,
        password=password,
    )


def _host_port(text: str, default: int, shown: str) -> tuple[str, int]:
    """`host[:port]` or `[v6]:port`; ValueError if it is not one."""
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{shown!r} is not a Redis URL ({e})") from None
    if not parts.hostname:
        raise ValueError(f"{shown!r} names no host: expected redis://host:port/db")
    return parts.hostname, default if port is None else port


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{shown!r}: the database must be a number, as in redis://host:6379/0")
    return int(text)


def _without_password(url: str) -> str:
    """`url` with the password of its login, if any, replaced by ***."""
    scheme, sep, rest = url.partition("://")
    login, at, _ = rest.partition("/")[0].rpartition("@")
    if not at or ":" not in login:
        return url
    user = login.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{rest[len(login) + 1 :]}"

"""Where a Redis server is, from its URL: the `--redis` setting, checked without connecting (and without
importing txredisapi, which installs a reactor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis listens and how to log in to it, from a `redis://` or `rediss://` (TLS) URL."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


def redis_url(value: Any) -> str:
    """A `redis://` or `rediss://` URL setting, checked as `parse_redis_url` checks it."""
    if not isinstance(value, str):
        raise ValueError("expected a redis:// or rediss:// URL")
    parse_redis_url(value)
    return value


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS; `ValueError` says what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme in ("redis-sentinel", "sentinel"):
        raise ValueError("Redis Sentinel is not supported yet: give the master's redis:// URL")
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r} is not a Redis URL: expected redis://host:port/db or rediss://...")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{url!r} is not a Redis URL ({e})") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host: expected redis://host:port/db")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a Redis URL takes no options after ? or #")
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"{url!r}: the database after the host must be a number, as in redis://host:6379/0")
    return RedisAddress(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        db=int(db),
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=None if parts.password is None else unquote(parts.password),
    )

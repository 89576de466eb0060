"""The connection code the Redis store and the node bus share: what the store's tests do not already show
(tests/test_store_redis.py covers URLs, TLS, refusals, silence and reconnecting through the store)."""

from __future__ import annotations

import pytest
import pytest_twisted
import txredisapi
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from vchat.redis_connection import RedisAddress, RedisUnavailable, connect_redis, parse_redis_url, unavailable
from vchat.store import redis_testing

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url


@pytest_twisted.ensureDeferred
async def test_a_connected_factory_replies_with_bytes_unless_told_otherwise(redis_url: str) -> None:
    address = parse_redis_url(redis_url)
    plain = await connect_redis(reactor, address, 5.0)
    text = await connect_redis(reactor, address, 5.0, charset="utf-8")
    try:
        assert isinstance(plain, txredisapi.RedisFactory) and plain.size == 1
        await plain.handler.set("key", "välue")
        assert await plain.handler.get("key") == "välue".encode()
        assert await text.handler.get("key") == "välue"
    finally:
        await plain.disconnect()
        await text.disconnect()


class Held(Protocol):
    """A connection to a server that never answers, which notes when it is closed."""

    closed: list[object]

    def connectionLost(self, reason: Failure) -> None:
        self.factory.closed.append(reason)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_cancelling_a_connection_under_way_closes_it() -> None:
    factory = Factory.forProtocol(Held)
    factory.closed = []  # type: ignore[attr-defined]
    silent = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        address = RedisAddress("127.0.0.1", silent.getHost().port, password="secret")
        connecting = Deferred.fromCoroutine(connect_redis(reactor, address, 5.0))
        await deferLater(reactor, 0.1, lambda: None)  # connected, waiting for AUTH's answer
        connecting.cancel()
        with pytest.raises(CancelledError):
            await connecting
        for _ in range(100):
            if factory.closed:  # type: ignore[attr-defined]
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert len(factory.closed) == 1  # type: ignore[attr-defined]
    finally:
        await silent.stopListening()


ADDRESS = RedisAddress("redis.example", 6380, 2, tls=True, password="secret")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            SSL.Error([("SSL routines", "", "certificate verify failed")]),
            "cannot reach Redis at rediss://redis.example:6380/2 over TLS ([('SSL routines', '', "
            "'certificate verify failed')]): is its certificate valid for redis.example, and signed by an "
            "authority this machine trusts?",
        ),
        (defer.TimeoutError(), "Redis at rediss://redis.example:6380/2 did not answer within 2.5 s"),
        (
            txredisapi.TimeoutError("slow"),
            "Redis at rediss://redis.example:6380/2 did not answer within 2.5 s",
        ),
        (
            ValueError("Redis error: could not auth: Not received Redis response in 2.5 seconds"),
            "Redis at rediss://redis.example:6380/2 did not answer within 2.5 s",
        ),
        (
            ValueError("Redis error: could not auth: Lost connection"),
            "Redis at rediss://redis.example:6380/2 closed the connection: is a Redis server listening there, "
            "with TLS if and only if the URL is rediss://?",
        ),
        (
            txredisapi.ConnectionError("Lost connection"),
            "Redis at rediss://redis.example:6380/2 closed the connection: is a Redis server listening there, "
            "with TLS if and only if the URL is rediss://?",
        ),
        (
            ValueError("Redis error: could not auth: WRONGPASS"),
            "Redis at rediss://redis.example:6380/2 refused vchat (Redis error: could not auth: WRONGPASS). "
            "Check the user, password and database in --redis.",
        ),
        (
            ConnectionRefusedError("refused"),
            "cannot reach Redis at rediss://redis.example:6380/2 (refused): is it running, and does --redis "
            "name it?",
        ),
    ],
)
def test_what_each_failure_to_connect_says(error: BaseException, message: str) -> None:
    said = unavailable(ADDRESS, error, 2.5)
    assert isinstance(said, RedisUnavailable) and str(said) == message
    assert "secret" not in message

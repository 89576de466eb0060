"""Connections to Redis, shared by the Redis store and the node bus: the URL, TLS that checks certificates,
and a connection that fails at once with advice when Redis cannot be used at first, then reconnects by itself.

txredisapi runs some of its timers on the global reactor: the reactor given to `connect_redis` must be that
one, as under twistd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import hiredis
import txredisapi  # installs the default reactor if none is: import this module after choosing one
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.redis_address import DEFAULT_PORT, RedisAddress, parse_redis_url, redis_url

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "RedisAddress",
    "RedisUnavailable",
    "connect_redis",
    "parse_redis_url",
    "redis_url",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds to connect, and for Redis to answer a call."""


class RedisUnavailable(Exception):
    """Redis cannot be used: the message says why and what to check, and shows no password."""


async def connect_redis(
    reactor: IReactorTime,
    address: RedisAddress,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    factory_class: type[txredisapi.RedisFactory] = txredisapi.RedisFactory,
    **factory_kwargs: Any,
) -> Any:
    """A txredisapi factory of `factory_class`, connected to Redis at `address` (logged in, its database
    selected, over TLS that checks the certificate for `rediss://`), which from then on reconnects by itself
    whenever the connection is lost. Fails at once with `RedisUnavailable` if Redis cannot be used now:
    unreachable, untrusted certificate, login or database refused, silent for `timeout` seconds.

    The factory keeps one connection (its commands, and a subscriber's messages, come in order), replies with
    bytes (`charset=None`) and leaves numbers as Redis sends them; `factory_kwargs` go to the constructor
    after those defaults and override them. `factory_class` is RedisFactory or a subclass that takes
    RedisFactory's keyword arguments (txredisapi's own SubscriberFactory does not: subclass it as
    `vchat.cluster.bus` does). `reactor` must also do TCP.
    """
    tcp: IStreamClientEndpoint = (
        SentinelEndpoint(reactor, address, timeout)
        if address.sentinels
        else HostnameEndpoint(reactor, address.host, address.port, timeout)
    )
    tls = optionsForClientTLS(address.host) if address.tls else None
    connected: Deferred[Any] = Deferred()

    def settle(result: object) -> None:
        if not connected.called:
            if isinstance(result, Failure):
                connected.errback(result)
            else:
                connected.callback(result)

    watched = _WatchedEndpoint(address, tcp, tls, settle)
    arguments: dict[str, Any] = {
        "uuid": str(address),
        "dbid": address.db or None,
        "poolsize": 1,
        "charset": None,
        "password": address.password,
        "replyTimeout": timeout,
        "convertNumbers": False,
        "username": address.username,
    }
    factory = factory_class(**{**arguments, **factory_kwargs})
    factory.deferred.addBoth(settle)  # fails (ValueError) when Redis refuses the login or the db
    factory.startConnecting(watched)
    try:
        await connected.addTimeout(timeout, reactor)
    except defer.CancelledError:
        await factory.disconnect()
        raise
    except Exception as e:
        await factory.disconnect()
        raise unavailable(address, e, timeout) from None
    watched.watcher = None
    return factory


class NoMaster(ConnectionError):
    """No Sentinel could say where the master is."""


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the master of a `redis-sentinel://` address: at each connection (the first and every
    reconnection) it asks the Sentinels in turn where the master is, then connects there. After a failover,
    Sentinel closes the clients of the demoted master, so they reconnect and find the new one."""

    def __init__(self, reactor: IReactorTime, address: RedisAddress, timeout: float) -> None:
        self._reactor = reactor
        self._address = address
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: IProtocolFactory) -> IProtocol:
        host, port = await self.master()
        master = HostnameEndpoint(self._reactor, host, port, self._timeout)
        protocol: IProtocol = await master.connect(protocolFactory)
        return protocol

    async def master(self) -> tuple[str, int]:
        """Where the first Sentinel that knows it says the master is; NoMaster, saying why, if none does."""
        problems = []
        for host, port in self._address.sentinels:
            asking = _SentinelQuestion(self._address.service or "")
            try:
                await HostnameEndpoint(self._reactor, host, port, self._timeout).connect(_OneShot(asking))
                reply = await asking.answer.addTimeout(self._timeout, self._reactor)
            except Exception as e:
                problems.append(f"{host}:{port}: {e or type(e).__name__}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode("ascii", "replace"), int(reply[1])
            problems.append(f"{host}:{port}: knows no master named {self._address.service!r}")
        raise NoMaster("; ".join(problems))


class _SentinelQuestion(Protocol):
    """Asks a Sentinel `SENTINEL get-master-addr-by-name` once; `answer` fires with its reply."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._reader = hiredis.Reader()
        self.answer: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        words = [b"SENTINEL", b"get-master-addr-by-name", self._service.encode()]
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in words)
        assert self.transport is not None
        self.transport.write(request)

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            reply = self._reader.gets()
        except hiredis.ProtocolError as e:
            reply = e
        if reply is False or self.answer.called:
            return
        if isinstance(reply, Exception):
            self.answer.errback(reply)
        else:
            self.answer.callback(reply)
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


class _OneShot(ClientFactory):
    """Gives its one protocol to the one connection."""

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self._protocol


def unavailable(address: RedisAddress, error: BaseException, timeout: float) -> RedisUnavailable:
    """What a person should know and do when Redis at `address` could not be used: `error` is how connecting,
    or the first command on a new connection, failed."""
    # txredisapi tells a login cut short, by a lost connection or by silence, only in its message
    login = str(error) if isinstance(error, ValueError) else ""
    if isinstance(error, NoMaster):
        return RedisUnavailable(
            f"no Sentinel of {address} could say where the master is ({error}): are they running, and is the "
            "service name right?"
        )
    if isinstance(error, SSL.Error):
        return RedisUnavailable(
            f"cannot reach Redis at {address} over TLS ({error}): is its certificate valid for "
            f"{address.host}, and signed by an authority this machine trusts?"
        )
    if (
        isinstance(error, defer.TimeoutError | txredisapi.TimeoutError)
        or "Not received Redis response" in login
    ):
        return RedisUnavailable(f"Redis at {address} did not answer within {timeout:g} s")
    if "Lost connection" in login or isinstance(error, txredisapi.ConnectionError):
        return RedisUnavailable(
            f"Redis at {address} closed the connection: is a Redis server listening there, with TLS "
            "if and only if the URL is rediss://?"
        )
    if isinstance(error, ValueError):
        return RedisUnavailable(
            f"Redis at {address} refused vchat ({error}). Check the user, password and database in --redis."
        )
    return RedisUnavailable(
        f"cannot reach Redis at {address} ({error}): is it running, and does --redis name it?"
    )


class _LossWatcher(ProtocolWrapper):
    """Passes a TLS connection on, telling its endpoint why TLS failed: Redis's client sees only a lost
    connection, with no word of an untrusted certificate."""

    factory: _LossWatching

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(SSL.Error):
            self.factory.endpoint.tell(reason)
        super().connectionLost(reason)


class _LossWatching(WrappingFactory):
    """Puts a `_LossWatcher` under each TLS connection of `endpoint`."""

    protocol = _LossWatcher

    def __init__(self, wrapped: IProtocolFactory, endpoint: _WatchedEndpoint) -> None:
        super().__init__(wrapped)
        self.endpoint = endpoint


def _redis_protocol(tls: IProtocol) -> IProtocol:
    """The protocol under TLS and the loss watcher."""
    watcher = cast(ProtocolWrapper, cast(ProtocolWrapper, tls).wrappedProtocol)
    return watcher.wrappedProtocol


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    """A TCP endpoint, with TLS if given, whose failures to connect (or to agree on TLS) are told to
    `watcher` until it is None: the reconnecting factory retries quietly, the first connection must fail."""

    def __init__(
        self,
        address: RedisAddress,
        tcp: IStreamClientEndpoint,
        tls: IOpenSSLClientConnectionCreator | None,
        watcher: Callable[[Failure], object],
    ) -> None:
        self._address = address
        self._tcp = tcp
        self._tls = tls
        self.watcher: Callable[[Failure], object] | None = watcher

    def __repr__(self) -> str:  # in the reconnecting pool's log lines
        return f"<Redis at {self._address}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if self._tls is None:
            return self._tcp.connect(protocolFactory).addErrback(self.tell)
        tls = TLSMemoryBIOFactory(self._tls, True, _LossWatching(protocolFactory, self))
        return self._tcp.connect(tls).addErrback(self.tell).addCallback(_redis_protocol)

    def tell(self, failure: Failure) -> Failure:
        """Tell the watcher of `failure`, and pass it on."""
        if self.watcher is not None:
            self.watcher(failure)
        return failure

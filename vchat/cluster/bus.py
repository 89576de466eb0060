"""The message bus between nodes (docs/cluster.md, "Messages between nodes"): Redis pub/sub, never stored.

Each node subscribes to its own inbox, `vchat:inbox:{node_id}`, and to the broadcast channel
`vchat:moderation`; `NodeBus.send` publishes a message to another node's inbox, `NodeBus.broadcast` to every
node, the sender included (Redis delivers a channel's messages to every subscriber, and the sender's own
subscription is one: a node applies its own bans the way it applies the others'). Received messages go to one
handler, `on_message(message, broadcast)`.

Batches: what a node sends during one turn of its reactor is published at the end of that turn, in the order
sent, each run of messages to one channel as one PUBLISH of a `batch` message (vchat.cluster.wire) when it
fits: under load one PUBLISH carries many messages, and no message waits longer than the turn.

Order: the messages one node sends another arrive in the order it sent them. A node publishes over exactly
one connection, so Redis reads its PUBLISH commands in the order they were written, and runs them one after
the other; each PUBLISH appends the message to every subscriber's output, which goes out over that
subscriber's one connection in order. Several publishing connections would lose that: two PUBLISHes written
on different connections may run in either order. The order holds across the two channels too (a broadcast
and then a message to a node's inbox), as a node hears both on one connection. A lost connection drops, it
never reorders: what is sent while it is down is not kept to send later, so nothing old can follow something
new. It can leave a gap: what was written just before the loss may be lost while what is sent after the
reconnection arrives (which is why a cross-node match ends when Redis goes away, docs/cluster.md).

While Redis cannot be reached: `send` and `broadcast` drop the message (counted in `dropped`) and return at
once, so nothing piles up; what other nodes publish meanwhile is lost too (pub/sub keeps nothing). The outage
is logged once, and its end once; the connections come back by themselves (txredisapi's reconnecting factory,
backing off up to 10 s), and the inbox subscribes again on each new connection. The inbox connection sends a
PING every `KEEPALIVE_INTERVAL` seconds, so that a connection Redis can no longer answer on (a host gone, a
network cut with no reset) is found dead within the timeout instead of waiting forever for messages.

txredisapi runs some of its timers on the global reactor: the reactor given to `NodeBus` must be that one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi  # installs the default reactor if none is: import this module after choosing one
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.cluster.wire import (
    BROADCAST_CHANNEL,
    WireError,
    decode_messages,
    encode_batch,
    encode_message,
    inbox_channel,
)
from vchat.outcome import Outcome
from vchat.redis_connection import DEFAULT_TIMEOUT, RedisAddress, RedisUnavailable, connect_redis

KEEPALIVE_INTERVAL = 5.0
"""Seconds between PINGs on the inbox connection, which otherwise only listens."""

MessageHandler = Callable[[dict[str, Any], bool], object]
"""What receives each message from another node: the message, and whether it came by broadcast."""

_BROADCAST = BROADCAST_CHANNEL.encode()


class BusCounters:
    """Running totals of the bus, plain ints for /metrics to read: messages published (`sent`), delivered to
    the handler (`received`), not published because Redis was down (`dropped`), and received but refused by
    `vchat.cluster.wire` (`malformed`)."""

    __slots__ = ("dropped", "malformed", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.malformed = 0


class NodeBus:
    """This node's end of the bus: its inbox and the broadcast channel, and the one connection it publishes
    on.

    `on_message` is called with every well-formed message received, and whether it came by broadcast; what it
    raises (or a Deferred it returns fails with) is logged and the bus goes on.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        address: RedisAddress,
        node_id: str,
        on_message: MessageHandler,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.address = address
        self.node_id = node_id
        self.inbox = inbox_channel(node_id)  # checks the id
        self.counters = BusCounters()
        self._reactor = reactor
        self._on_message = on_message
        self._timeout = timeout
        self._inbox_factory: _InboxFactory | None = None
        self._publisher: _PublisherFactory | None = None
        self._subscribed: Deferred[None] | None = None  # the first subscription, while connecting
        self._subscriber: _InboxProtocol | None = None  # the inbox connection, once subscribed
        self._running = False  # connected, and not yet told to disconnect: outages are logged
        self._up = False
        self._down_since: float | None = None
        self._dropped_before = 0
        self._outbox: list[tuple[str, bytes]] = []  # sent this turn, encoded, to publish at its end
        self._flushing: IDelayedCall | None = None
        # Told True when the bus is back after an outage, False when one starts (after the first connection).
        self.on_link: Callable[[bool], object] | None = None

    def __repr__(self) -> str:
        return f"<NodeBus {self.node_id} at {self.address}>"

    @property
    def connected(self) -> bool:
        """Whether the bus can both send and receive now."""
        return self._up

    def connect(self) -> Deferred[None]:
        """Connect to Redis and subscribe; fails with `RedisUnavailable` (saying why and what to check) if
        Redis cannot be used now. After that the bus reconnects by itself until `disconnect`."""
        if self._subscribed is not None or self._inbox_factory is not None or self._publisher is not None:
            raise RuntimeError(f"{self!r} is connected already")
        return Deferred.fromCoroutine(self._connect())

    async def _connect(self) -> None:
        self._subscribed = Deferred()
        try:
            self._inbox_factory = await connect_redis(
                self._reactor,
                self.address,
                self._timeout,
                factory_class=_InboxFactory,
                bus=self,
                channels=[self.inbox, BROADCAST_CHANNEL],
            )
            try:
                await self._subscribed.addTimeout(self._timeout, self._reactor)
            except defer.TimeoutError:
                raise RedisUnavailable(
                    f"Redis at {self.address} did not confirm the subscription within {self._timeout:g} s"
                ) from None
            self._publisher = await connect_redis(
                self._reactor, self.address, self._timeout, factory_class=_PublisherFactory, bus=self
            )
        except BaseException:
            await self._close()
            raise
        finally:
            self._subscribed = None
        self._log.info(
            "node bus connected to Redis at {address}: inbox {inbox}", address=self.address, inbox=self.inbox
        )
        self._running = True
        self._up = True
        self._links_changed()  # in case a connection was lost again meanwhile

    def disconnect(self) -> Deferred[None]:
        """Stop reconnecting and close both connections; fires when they are closed. The bus may connect
        again."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        self._running = False
        self._up = False
        self._down_since = None
        factories = [f for f in (self._inbox_factory, self._publisher) if f is not None]
        self._inbox_factory = self._publisher = None
        self._subscriber = None
        for factory in factories:
            await factory.disconnect()

    def send(self, node_id: str, message: dict[str, Any]) -> bool:
        """Publish `message` to node `node_id`'s inbox at the end of this reactor turn; True if it will be.
        False, counted as dropped, when Redis cannot be reached now: nothing is kept to send later (a message
        whose connection is lost before the turn ends is counted as dropped then). WireError if `message`
        cannot go between nodes (a bug of the caller), ValueError if `node_id` is no node id."""
        return self._publish(inbox_channel(node_id), message)

    def broadcast(self, message: dict[str, Any]) -> bool:
        """Publish `message` to every node, this one included; False and WireError as for `send`."""
        return self._publish(BROADCAST_CHANNEL, message)

    def _publish(self, channel: str, message: dict[str, Any]) -> bool:
        data = encode_message(message)
        publisher = self._publisher
        if publisher is None or not publisher.pool:
            self.counters.dropped += 1
            return False
        self._outbox.append((channel, data))
        if self._flushing is None:
            self._flushing = self._reactor.callLater(0, self._flush)
        return True

    def _flush(self) -> None:
        """Publish what was sent since the last flush, in order, each run of messages to one channel as one
        batch: one PUBLISH for many messages under load, none delayed by more than the reactor's turn."""
        self._flushing = None
        outbox, self._outbox = self._outbox, []
        runs: list[tuple[str, list[bytes]]] = []
        for channel, data in outbox:
            if runs and runs[-1][0] == channel:
                runs[-1][1].append(data)
            else:
                runs.append((channel, [data]))
        for channel, messages in runs:
            if self._write(channel, encode_batch(messages)):
                self.counters.sent += len(messages)
            else:
                self.counters.dropped += len(messages)

    def _write(self, channel: str, payloads: list[bytes]) -> bool:
        """PUBLISH each payload on the one connection (see the module's docstring); False if it is lost."""
        publisher = self._publisher
        if publisher is None or not publisher.pool:
            return False
        try:
            for data in payloads:
                publishing: Deferred[Any] = publisher.pool[0].publish(channel, data)
                publishing.addErrback(self._unconfirmed)
        except txredisapi.ConnectionError:  # lost, and not yet out of the pool
            return False
        return True

    def _unconfirmed(self, failure: Failure) -> None:
        # The connection was lost, or Redis was silent for the timeout (txredisapi then drops the
        # connection): the outage is logged once, by _links_changed, not once per message.
        if not failure.check(txredisapi.ConnectionError):
            self._log.failure("publishing to other nodes failed", failure)

    def _received(self, channel: bytes, data: bytes) -> None:
        """A message from the inbox connection: decode it and hand it to the handler, come what may."""
        try:
            messages = decode_messages(data)
        except WireError as e:
            self.counters.malformed += 1
            count = self.counters.malformed
            if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood logs a few lines
                self._log.warn(
                    "dropped a malformed message from another node ({count} so far): {reason}",
                    count=count,
                    reason=str(e),
                )
            return
        broadcast = channel == _BROADCAST
        for message in messages:
            self.counters.received += 1
            self._handle(message, broadcast)

    def _handle(self, message: dict[str, Any], broadcast: bool) -> None:
        """Hand one message to the handler; what it raises, or its Deferred fails with, is logged."""
        try:
            result = self._on_message(message, broadcast)
        except Exception:
            self._log.failure("handling a {type!r} message from another node failed", type=message["type"])
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda failure: self._log.failure(
                    "handling a {type!r} message from another node failed", failure, type=message["type"]
                )
            )

    def _inbox_up(self, protocol: _InboxProtocol) -> None:
        self._subscriber = protocol
        if self._subscribed is not None and not self._subscribed.called:
            self._subscribed.callback(None)
        self._links_changed()

    def _inbox_down(self, protocol: _InboxProtocol) -> None:
        if self._subscriber is protocol:
            self._subscriber = None
            self._links_changed()

    def _inbox_refused(self, failure: Failure) -> None:
        """Redis refused the subscription (an ACL without the channels, say)."""
        if self._subscribed is not None and not self._subscribed.called:
            reason = failure.getErrorMessage()
            self._subscribed.errback(
                RedisUnavailable(f"Redis at {self.address} refused to subscribe: {reason}")
            )
        else:
            self._log.error(
                "Redis at {address} refused to subscribe again: {reason}; trying again",
                address=self.address,
                reason=failure.getErrorMessage(),
            )

    def _links_changed(self) -> None:
        """Log the start and the end of an outage, once each."""
        up = self._subscriber is not None and self._publisher is not None and bool(self._publisher.pool)
        if not self._running or up == self._up:
            return
        self._up = up
        now = self._reactor.seconds()
        if not up:
            self._down_since = now
            self._dropped_before = self.counters.dropped
            self._log.warn(
                "lost the connection to Redis at {address}: messages between nodes are dropped until it is"
                " back",
                address=self.address,
            )
        elif self._down_since is not None:
            self._log.info(
                "the connection to Redis at {address} is back, {inbox} subscribed again, after"
                " {seconds:.1f} s ({dropped} messages to other nodes dropped meanwhile)",
                address=self.address,
                inbox=self.inbox,
                seconds=now - self._down_since,
                dropped=self.counters.dropped - self._dropped_before,
            )
            self._down_since = None
        if self.on_link is not None:
            try:
                self.on_link(up)
            except Exception:
                self._log.failure("telling the node that the bus is {state}", state="up" if up else "down")


class _InboxProtocol(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """The inbox connection: subscribes on every connection, the first and each one after a reconnection
    (Redis forgets a connection's subscriptions with it, and txredisapi does not subscribe again)."""

    factory: _InboxFactory
    _keepalive: LoopingCall | None = None

    def connectionMade(self) -> Deferred[None]:
        logged_in: Deferred[None] = super().connectionMade()  # AUTH and SELECT, then ready
        return logged_in.addCallback(self._subscribe)

    def _subscribe(self, _: object) -> None:
        if not self._ready:  # the login failed: txredisapi closes the connection and says why
            return
        try:
            subscribing: Deferred[Any] = self.subscribe(self.factory.channels)
        except txredisapi.ConnectionError:  # lost already: connectionLost tells the bus
            return
        subscribing.addCallbacks(self._subscribed, self._refused)

    def _subscribed(self, _: object) -> None:
        bus = self.factory.bus
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = bus._reactor
        self._keepalive.start(KEEPALIVE_INTERVAL, now=False).addErrback(
            lambda failure: bus._log.failure("the inbox's keepalive stopped", failure)
        )
        bus._inbox_up(self)

    def _refused(self, failure: Failure) -> None:
        if failure.check(txredisapi.ConnectionError):
            return  # lost while subscribing: connectionLost tells the bus
        self.factory.bus._inbox_refused(failure)
        self.transport.loseConnection()

    def _ping(self) -> None:
        # A reply that does not come within the timeout makes txredisapi drop the connection, which then
        # reconnects; a lost connection fails the PING, which connectionLost has handled.
        try:
            pinging: Deferred[Any] = self.execute_command("PING")
        except txredisapi.ConnectionError:
            return
        pinging.addErrback(lambda failure: failure.trap(txredisapi.ConnectionError))

    def messageReceived(self, pattern: object, channel: bytes, message: bytes) -> None:
        self.factory.bus._received(channel, message)

    def connectionLost(self, why: Failure) -> None:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        super().connectionLost(why)
        self.factory.bus._inbox_down(self)


class _InboxFactory(txredisapi.SubscriberFactory):  # type: ignore[misc]
    """Makes the inbox connection (SubscriberFactory's constructor takes no login: RedisFactory's does)."""

    protocol = _InboxProtocol

    def __init__(self, *, bus: NodeBus, channels: list[str], **kwargs: Any) -> None:
        txredisapi.RedisFactory.__init__(self, **kwargs)
        self.bus = bus
        self.channels = channels


class _PublisherFactory(txredisapi.RedisFactory):  # type: ignore[misc]
    """Makes the connection the bus publishes on, telling the bus when it comes and goes."""

    def __init__(self, *, bus: NodeBus, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bus = bus

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        self.bus._links_changed()

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self.bus._links_changed()


class NodeBusService(Service):
    """Connects the node bus when started and disconnects it when stopped (cancelling a connection under way);
    when the bus cannot connect, logs why and calls `on_failure` (twistd passes a function that stops the
    process). It may be started again after a stop."""

    _log = Logger()

    def __init__(self, bus: NodeBus, on_failure: Callable[[], object]) -> None:
        self.setName("cluster-bus")
        self.bus = bus
        self._on_failure = on_failure
        self._connecting: Deferred[None] | None = None
        self._connected: Outcome[None] = Outcome()

    def whenConnected(self) -> Deferred[None]:
        """Fires when the bus has connected since the last start (at once if it has), or fails as that
        failed."""
        return self._connected.observe()

    def startService(self) -> None:
        super().startService()
        if self._connected.settled:
            self._connected = Outcome()
        self._connecting = self.bus.connect()
        self._connecting.addCallbacks(self._connected.fire, self._failed)

    def _failed(self, failure: Failure) -> None:
        if failure.check(RedisUnavailable):
            self._log.error("cannot start the node bus: {reason}", reason=str(failure.value))
        elif not failure.check(defer.CancelledError):  # cancelled: stopped while connecting
            self._log.failure("cannot start the node bus", failure)
        if not failure.check(defer.CancelledError):
            self._on_failure()
        self._connected.fire(failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        connecting, self._connecting = self._connecting, None
        if connecting is None:
            return succeed(None)
        connecting.cancel()  # does nothing once connected
        done: Deferred[None] = Deferred()
        connecting.addBoth(lambda _: self.bus.disconnect()).chainDeferred(done)
        return done

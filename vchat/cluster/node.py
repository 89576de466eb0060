"""A node of a cluster (docs/cluster.md): the way to the other nodes, what it does with their messages, and
the service that connects it to Redis and runs its heartbeat and matcher.

Messages between nodes (each a map with a string `type`; `node` is the sender's id, added by `ClusterLink`):

    pair      the matcher claimed `to` (its search of `since`) with `partner` of `partner_node`
              (`partner_since`): sent to the offer's node
    offer     match `match_id` offered to `to` (search of `since`) with the sender's user, described in
              `partner`
    accept    `to`'s offered match `match_id` starts; `partner` describes the accepting user
    refuse    `to`'s offered match `match_id` does not happen: the partner had moved on
    release   the matcher claimed `to` (search of `since`) with a user who had moved on: search again
    relay     a message (`message`) from `from` to `to` in match `match_id`
    left      `to`'s partner in match `match_id` left it (`reason`: next, stop or disconnect)
    away      `to`'s partner in match `match_id` lost its connection and may come back
    back      `to`'s partner in match `match_id` is connected again
    block     (to all) `a` and `b` are never to be matched (one reported the other)
    forget    (to all) session `session_id`, which this node blocked from someone, ended for good
    ban, lift (to all) ban `ban_id` was issued or lifted
    dead      (to all) node `dead` stopped its heartbeat: its users are gone
    account_deleted (to all) the account `account` was deleted: end its sessions
    handover  hand over the session resume token `token` names (its client resumes on the sender); answer
              `request` with `handed`
    handed    the answer to `request`: `state`, the session (vchat.protocol.handover), or null, with `banned`,
              the session's id if a ban ended it
    find_session (to all) an admin API asks for session `session_id` (`action`: view, or kick it): the node
              that has it answers `request` with `found_session`; the others say nothing
    found_session the answer to `request`: `session`, the session as the admin API shows it (before a kick)

A message that does not have these fields with these types is refused (ValueError, logged by the bus).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.cluster.bus import NodeBus, NodeBusService
from vchat.cluster.matcher import Matcher
from vchat.cluster.matchmaker import ClusterMatchmaker
from vchat.cluster.presence import NodeCounts, NodePresence
from vchat.cluster.queue import SharedQueue
from vchat.moderation.service import ModerationService
from vchat.protocol.handover import HandedSession, decode_handed
from vchat.protocol.remote import INodeLink, NodeMessage
from vchat.protocol.session import Session
from vchat.protocol.switchboard import Switchboard
from vchat.redis_connection import RedisAddress, RedisUnavailable, connect_redis

_REASONS = frozenset({"next", "stop", "disconnect"})
BAN_RELOAD_DELAY = 1.0
"""Seconds between tries to read the bans again after Redis was away, until the store answers."""
HANDOVER_TIMEOUT = 2.0
"""Seconds a node waits for another to hand a session over before it starts a new one."""
FIND_TIMEOUT = 2.0
"""Seconds an admin API waits for another node to say it has a session, before it answers that none has."""
_ACTIONS = frozenset({"view", "kick"})
_T = TypeVar("_T")

Handed = tuple[HandedSession | None, str | None]
"""What a node's answer to a handover gives: the session's state, or the id of a session a ban ended."""

# type -> its fields and their types (float: a time, int accepted as msgpack may carry one).
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "pair": {
        "to": str,
        "since": (float, int),
        "partner": str,
        "partner_node": str,
        "partner_since": (float, int),
    },
    "offer": {"to": str, "since": (float, int), "match_id": str, "partner": dict},
    "accept": {"to": str, "match_id": str, "partner": dict},
    "refuse": {"to": str, "match_id": str},
    "release": {"to": str, "since": (float, int)},
    "relay": {"to": str, "from": str, "match_id": str, "message": dict},
    "left": {"to": str, "match_id": str, "reason": str},
    "away": {"to": str, "match_id": str},
    "back": {"to": str, "match_id": str},
    "block": {"a": str, "b": str},
    "forget": {"session_id": str},
    "ban": {"ban_id": str},
    "lift": {"ban_id": str},
    "dead": {"dead": str},
    "account_deleted": {"account": str},
    "handover": {"token": str, "request": str},
    "handed": {"request": str},
    "find_session": {"request": str, "session_id": str, "action": str},
    "found_session": {"request": str, "session": dict},
}


def check_message(message: NodeMessage) -> None:
    """ValueError, saying why, unless `message` is one of the messages above, from a node."""
    kind = message["type"]
    fields = _FIELDS.get(kind)
    if fields is None:
        raise ValueError(f"unknown message type {kind!r}")
    if type(message.get("node")) is not str:
        raise ValueError(f"a {kind!r} message names its node")
    for name, kinds in fields.items():
        value = message.get(name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"a {kind!r} message's {name} is missing or of the wrong type")
    if kind == "left" and message["reason"] not in _REASONS:
        raise ValueError(f"unknown reason {message['reason']!r}")
    if kind == "find_session" and message["action"] not in _ACTIONS:
        raise ValueError(f"unknown action {message['action']!r}")


@implementer(INodeLink)
class ClusterLink:
    """The way to the other nodes, over the node bus: each message is stamped with this node's id."""

    _log = Logger()

    def __init__(self, node_id: str, clock: IReactorTime) -> None:
        self.node_id = node_id
        self.bus: NodeBus | None = None  # set once made: the bus needs the handler of what it receives
        self._clock = clock
        self._asked: dict[str, Deferred[Any]] = {}  # request -> the answer awaited

    def fetch_session(self, node_id: str, token: str) -> Deferred[Handed]:
        request = secrets.token_urlsafe(9)
        if not self.send(node_id, {"type": "handover", "token": token, "request": request}):
            return succeed((None, None))
        return self._answer_to(request, HANDOVER_TIMEOUT, (None, None))

    def handed(self, message: NodeMessage) -> None:
        """A node's answer to `fetch_session`; a late one (after the timeout) is dropped."""
        if message["request"] not in self._asked:
            self._log.warn("a session handed over too late was dropped")
            return
        banned = message.get("banned")
        try:
            state = None if message.get("state") is None else decode_handed(message["state"])
        except ValueError as e:
            self._log.warn("a session handed over was not valid: {why}", why=str(e))
            state = None
        self._answered(message["request"], (state, banned if isinstance(banned, str) else None))

    def find_session(self, session_id: str, kick: bool) -> Deferred[dict[str, Any] | None]:
        """Session `session_id` of another node, as the admin API shows it (kicked after it is read, if
        `kick`); None if no node says it has it within `FIND_TIMEOUT` (or Redis is away)."""
        request = secrets.token_urlsafe(9)
        action = "kick" if kick else "view"
        asking = {"type": "find_session", "request": request, "session_id": session_id, "action": action}
        if not self.broadcast(asking):
            return succeed(None)
        return self._answer_to(request, FIND_TIMEOUT, None)

    def found_session(self, message: NodeMessage) -> None:
        """A node's answer to `find_session`; a late one is dropped."""
        self._answered(message["request"], message["session"])

    def _answer_to(self, request: str, timeout: float, otherwise: _T) -> Deferred[_T]:
        """What `_answered` gives for `request`, or `otherwise` after `timeout` seconds."""
        waiting: Deferred[_T] = Deferred()
        self._asked[request] = waiting
        waiting.addTimeout(timeout, self._clock, onTimeoutCancel=lambda *_: otherwise)
        waiting.addBoth(self._forget_request, request)
        return waiting

    def _forget_request(self, result: _T, request: str) -> _T:
        self._asked.pop(request, None)
        return result

    def _answered(self, request: str, answer: object) -> None:
        waiting = self._asked.pop(request, None)
        if waiting is not None:
            waiting.callback(answer)

    def send(self, node_id: str, message: NodeMessage) -> bool:
        return self.bus is not None and self.bus.send(node_id, {**message, "node": self.node_id})

    def broadcast(self, message: NodeMessage) -> bool:
        return self.bus is not None and self.bus.broadcast({**message, "node": self.node_id})

    @property
    def connected(self) -> bool:
        """Whether the bus can send and receive now."""
        return self.bus is not None and self.bus.connected


class NodeMessages:
    """Acts on what the other nodes send this one (see the module)."""

    _log = Logger()

    def __init__(
        self,
        link: ClusterLink,
        switchboard: Switchboard,
        matchmaker: ClusterMatchmaker,
        moderation: ModerationService,
        clock: IReactorTime,
        describe_session: Callable[[Session, str], dict[str, Any]] | None = None,
    ) -> None:
        """`describe_session(session, node_id)` gives a session as the admin API shows it, for another node's
        admin API; None: this node tells none."""
        self._link = link
        self._clock = clock
        self._switchboard = switchboard
        self._matchmaker = matchmaker
        self._moderation = moderation
        self._describe_session = describe_session

    def received(self, message: NodeMessage, broadcast: bool) -> Deferred[None] | None:
        """Handle one message from the bus (`broadcast`: it came to every node)."""
        check_message(message)
        kind, node = message["type"], message["node"]
        board, matchmaker = self._switchboard, self._matchmaker
        if kind == "relay":
            if not board.remote_relay(message["to"], message["match_id"], message["message"]):
                # The match ended here and the news was lost: end it there too.
                self._link.send(
                    node,
                    {
                        "type": "left",
                        "to": message["from"],
                        "match_id": message["match_id"],
                        "reason": "disconnect",
                    },
                )
        elif kind == "left":
            board.remote_left(message["to"], message["match_id"], message["reason"])
        elif kind == "away":
            board.remote_away(message["to"], message["match_id"])
        elif kind == "back":
            board.remote_back(message["to"], message["match_id"], node)
        elif kind == "handover":
            state, banned = board.hand_over(message["token"], node)
            self._link.send(
                node,
                {
                    "type": "handed",
                    "request": message["request"],
                    "state": None if state is None else state.encode(),
                    "banned": banned,
                },
            )
        elif kind == "handed":
            self._link.handed(message)
        elif kind == "find_session":
            self._find_session(message, node)
        elif kind == "found_session":
            self._link.found_session(message)
        elif kind == "pair":
            matchmaker.on_pair(message)
        elif kind == "offer":
            matchmaker.on_offer(message, node)
        elif kind == "accept":
            matchmaker.on_accept(message, node)
        elif kind == "refuse":
            matchmaker.on_refuse(message)
        elif kind == "release":
            matchmaker.on_release(message)
        elif kind == "block":  # the matcher's engine only: the reporting node blocked the pair in its own
            if matchmaker.matcher is not None:
                matchmaker.matcher.block(message["a"], message["b"])
        elif kind == "forget":  # the same: its blocks go with it
            if matchmaker.matcher is not None:
                matchmaker.matcher.forget(message["session_id"])
        elif kind == "ban":
            return self._moderation.announced_ban(message["ban_id"])
        elif kind == "lift":
            self._moderation.announced_lift(message["ban_id"])
        elif kind == "account_deleted":
            board.end_account(message["account"])
        elif kind == "dead":
            ended = board.remote_node_lost(message["dead"])
            if ended:
                self._log.info(
                    "{count} matches with users of dead node {node} ended", count=ended, node=message["dead"]
                )
        return None

    def _find_session(self, message: NodeMessage, node: str) -> None:
        session = self._switchboard.find(message["session_id"])
        if session is None or self._describe_session is None:
            return  # the node that has it answers
        view = self._describe_session(session, self._link.node_id)
        if message["action"] == "kick":
            self._switchboard.kick(session.session_id)
        self._link.send(node, {"type": "found_session", "request": message["request"], "session": view})

    def link_changed(self, up: bool) -> None:
        """The bus lost Redis or has it again: once back, what other nodes said meanwhile is lost, so the
        queue entries are written again and the bans read again."""
        if not up:
            return
        self._matchmaker.register_again()
        self._reload_bans()

    def _reload_bans(self) -> None:
        """Read the bans again, and again every second until the store answers (it reconnects on its own
        schedule), while the bus stays up."""
        reloading = self._moderation.reload_bans()
        reloading.addErrback(self._reload_failed)

    def _reload_failed(self, failure: Failure) -> None:
        if not self._link.connected:
            return  # the next reconnection reads them again
        self._log.warn(
            "cannot read the bans again yet ({error}): trying again in {delay:g} s",
            error=failure.getErrorMessage(),
            delay=BAN_RELOAD_DELAY,
        )
        self._clock.callLater(BAN_RELOAD_DELAY, self._reload_bans)


class RedisHandle:
    """Runs scripts on the cluster's Redis connection once `ClusterService` has opened it; until then (and
    after it closed) every call fails with RedisUnavailable, as a call during an outage does."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self.factory: Any = None  # txredisapi's factory, while connected

    def eval(self, script: str, keys: Sequence[str] = (), args: Sequence[str] = ()) -> Deferred[Any]:
        """Run `script` as txredisapi's `eval` does."""
        if self.factory is None:
            return fail(RedisUnavailable(f"not connected to Redis at {self.address}"))
        result: Deferred[Any] = self.factory.handler.eval(script, list(keys), list(args))
        return result


class ClusterService(MultiService):
    """Connects this node to the cluster's Redis, then starts its children (the node bus, the heartbeat, the
    matcher) in order; stops them and disconnects when stopped. A failure to connect at first is logged with
    what to check, and `on_failure` is called (twistd passes a function that stops the process)."""

    _log = Logger()

    def __init__(
        self,
        handle: RedisHandle,
        reactor: IReactorTime,
        on_failure: Callable[[], object],
        bus: NodeBusService,
    ) -> None:
        super().__init__()
        self.setName("cluster")
        self._handle = handle
        self._reactor = reactor
        self._on_failure = on_failure
        self._bus = bus
        self._connecting: Deferred[Any] | None = None
        # What the admin API's figures read, and the link to the other nodes, set by `cluster_node`.
        self.link: ClusterLink | None = None
        self.switchboard: Switchboard | None = None
        self.node_id = ""
        self.presence: NodePresence | None = None
        self.bus: NodeBus | None = None

    def startService(self) -> None:
        # Children start once Redis is reached (MultiService would start them now).
        self.running = 1
        self._connecting = Deferred.fromCoroutine(self._connect())
        self._connecting.addErrback(self._failed)

    async def _connect(self) -> None:
        self._handle.factory = await connect_redis(self._reactor, self._handle.address)
        self._log.info("connected to the cluster's Redis at {address}", address=self._handle.address)
        self._bus.startService()
        for service in self:
            if service is not self._bus:
                service.startService()

    def _failed(self, failure: Failure) -> None:
        if failure.check(RedisUnavailable):
            self._log.error("cannot join the cluster: {reason}", reason=failure.getErrorMessage())
        else:
            self._log.failure("cannot join the cluster", failure)
        self._on_failure()

    def stopService(self) -> Deferred[None]:
        self.running = 0
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.called:
            connecting.cancel()
            return succeed(None)
        stopping: Deferred[Any] = super().stopService() if any(s.running for s in self) else succeed(None)
        return stopping.addCallback(lambda _: self._disconnect())

    def find_session(self, session_id: str, kick: bool) -> Deferred[dict[str, Any] | None]:
        """Another node's session, as the admin API shows it, kicked if `kick` (see `ClusterLink`)."""
        assert self.link is not None
        return self.link.find_session(session_id, kick)

    def end_account(self, account_id: str) -> None:
        """End the sessions of a deleted account on every node (on this one alone while Redis is away)."""
        assert self.link is not None and self.switchboard is not None
        if not self.link.broadcast({"type": "account_deleted", "account": account_id}):
            self.switchboard.end_account(account_id)

    def _disconnect(self) -> Deferred[None] | None:
        factory, self._handle.factory = self._handle.factory, None
        return None if factory is None else factory.disconnect()


def cluster_node(
    address: RedisAddress,
    reactor: IReactorTime,
    switchboard: Switchboard,
    moderation: ModerationService,
    on_failure: Callable[[], object],
    node_id: str | None = None,
    recent_partners: int = 10,
    recent_seconds: float = 600.0,
    rematch_after: float = 30.0,
    describe_session: Callable[[Session, str], dict[str, Any]] | None = None,
) -> ClusterService:
    """Make this process a node of the cluster whose Redis is at `address`: the switchboard matches and
    relays through it, moderation announces its bans to it, and `online` counts every node. `node_id` is
    random unless given; the matching settings are the engine's; `describe_session` gives a session of this
    node as the admin API shows it, for the other nodes' admin APIs."""
    node_id = node_id or secrets.token_hex(6)
    handle = RedisHandle(address)
    queue = SharedQueue(handle)
    link = ClusterLink(node_id, reactor)
    matchmaker = ClusterMatchmaker(node_id, switchboard.matchmaker.engine, queue, switchboard, link, reactor)
    messages = NodeMessages(link, switchboard, matchmaker, moderation, reactor, describe_session)
    bus = link.bus = NodeBus(reactor, address, node_id, messages.received)
    bus.on_link = messages.link_changed

    def counts() -> NodeCounts:
        return NodeCounts(switchboard.online, matchmaker.waiting(), switchboard.matched)

    async def bury(dead: str) -> None:
        await queue.remove_node(dead)
        link.broadcast({"type": "dead", "dead": dead})

    presence = NodePresence(node_id, handle, reactor, counts, bury, waiting=matchmaker.longest_waits)
    matchmaker.others_waiting = presence.others_waiting
    matcher = matchmaker.matcher = Matcher(
        queue, node_id, reactor, matchmaker.paired, recent_partners, recent_seconds, rematch_after
    )
    switchboard.matchmaker = matchmaker
    switchboard.link = link
    switchboard.node_id = node_id
    switchboard.count_online = lambda: (
        switchboard.online + sum(counts.online for counts in presence.others().values())
    )
    moderation.announce = link.broadcast
    bus_service = NodeBusService(bus, on_failure)
    service = ClusterService(handle, reactor, on_failure, bus_service)
    service.node_id = node_id
    service.link = link
    service.switchboard = switchboard
    service.presence = presence
    service.bus = bus
    for child in (bus_service, presence, matcher):
        child.setServiceParent(service)
    return service

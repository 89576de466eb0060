"""This node's matchmaking in a cluster (docs/cluster.md, "Matching"): the local fast path over the in-memory
engine, the shared queue in Redis for everyone else, and the handshake that turns the matcher's cross-node
pairs into matches.

Every user of this node who waits has a ticket, in one of these states:

    local     in the node's engine and in the shared queue: a local arrival may take it
    shared    in the shared queue only (fairness sent its search there): the matcher pairs it
    taking    in a `take` under way (a local match waiting for Redis's word)
    claimed   a `take` found it gone from the shared queue: the matcher claimed it, its pair is on the way
    offering  its pair came; the partner's node was offered the match and has not answered yet

A search first asks the engine for a partner among this node's waiting users. None: the user waits, locally
and in the shared queue. One: `SharedQueue.take` withdraws that partner from the shared queue in one atomic
step, unless a compatible user of another node has waited for longer than `FAIR_WAIT` (the search then goes to
the shared queue, for the matcher, which pairs the longest-waiting first); the local match starts when the take
succeeds. A take that finds the partner gone means the matcher claimed it first.

A cross-node pair (the matcher's `on_pair`, on whichever node holds its lease) goes to the offer's node as
`pair`; that node, if its user still waits with the same entry (the `since` of its search), removes it from
its engine and sends the partner's node `offer`, with what the partner is told of its user; that node answers
`accept` (and starts its side of the match) or `refuse`, and the offer's node starts its side or searches
again. A user the matcher claimed who has moved on is `release`d: its partner searches again. Every message
names the entry (`since`) or the match it is about, so a late one changes nothing. A handshake that gets no
answer within `HANDSHAKE_TIMEOUT` gives up (the user searches again, keeping its place), so a message lost
while Redis was away leaves nobody searching forever.

While Redis cannot be reached, searches match on this node alone and nothing is queued; the outage is logged
once and its end once, Redis is tried every `PROBE_INTERVAL`, and when it answers again every waiting user's
entry is written again (`since` kept), so the other nodes see them again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.cluster.entries import QueueEntry, partner_partitions
from vchat.cluster.matcher import Matcher
from vchat.cluster.outage import Outage
from vchat.cluster.queue import SharedQueue, Take
from vchat.matching import MatchingEngine, Pair, Seeker
from vchat.protocol.matchmaker import IMatchmaker
from vchat.protocol.partner import RemotePartner, read_partner
from vchat.protocol.remote import INodeLink, NodeMessage
from vchat.protocol.switchboard import Switchboard

FAIR_WAIT = 1.0
"""Seconds a compatible user of another node may have waited before a local match gives way to the matcher."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds a claimed user waits for its pair, and an offer for its answer, before searching again."""
CALL_TIMEOUT = 2.0
"""Seconds Redis has to answer a call of the matchmaker before it counts as away."""
PROBE_INTERVAL = 1.0
"""Seconds between tries to reach Redis again during an outage."""
QUEUE_DELAY = 0.05
"""Seconds a user who found nobody waits on its node alone before its entry goes to the shared queue: a busy
node pairs most of its users with each other within that, without a call to Redis."""
REFRESH_INTERVAL = 10.0
"""Seconds between rewrites of the waiting users' entries, which puts back any whose claim was lost unseen."""

_State = Literal["local", "shared", "taking", "claimed", "offering"]
_T = TypeVar("_T")


@dataclass(eq=False, slots=True)
class _Ticket:
    """A waiting user of this node: its search, its entry in the shared queue, and where it stands."""

    entry: QueueEntry
    state: _State = "local"
    timer: IDelayedCall | None = None
    match_id: str | None = None  # the match offered, while offering
    rewritten: bool = False  # its entry was written again: a claim may have left a copy in the shared queue
    queued: bool = False  # its entry was sent to the shared queue (it may be claimed)

    @property
    def session_id(self) -> str:
        return self.entry.session_id


@implementer(IMatchmaker)
class ClusterMatchmaker:
    """Matches this node's users locally when it may and through the shared queue otherwise (see the module)."""

    _log = Logger()

    def __init__(
        self,
        node_id: str,
        engine: MatchingEngine,
        queue: SharedQueue,
        switchboard: Switchboard,
        link: INodeLink,
        clock: IReactorTime,
    ) -> None:
        self.node_id = node_id
        self.engine = engine
        self.matcher: Matcher | None = None  # told of reported pairs and nudged; set by the wiring
        self._queue = queue
        self._switchboard = switchboard
        self._link = link
        self._clock = clock
        self._tickets: dict[str, _Ticket] = {}
        self._last_since = float("-inf")
        self._outage = Outage(clock, self._log)
        self._probe: IDelayedCall | None = None
        self._refresh: IDelayedCall | None = None
        # Users waiting here whose entries are not in the shared queue yet, and the timer that sends them.
        self._unqueued: dict[str, _Ticket] = {}
        self._send_timer: IDelayedCall | None = None
        # The other nodes' longest waits by partition (NodePresence.others_waiting), for the fairness check.
        self.others_waiting: Callable[[], list[Mapping[str, float]]] = list

    # --- IMatchmaker ----------------------------------------------------------------------------------

    def search(self, seeker: Seeker, now: float) -> None:
        self.cancel(seeker.session_id)
        # Each search gets its own `since`, so that a message about an earlier one is known as such.
        since = self._last_since = max(now, self._last_since + 1e-6)
        entry = QueueEntry(
            seeker.session_id,
            self.node_id,
            seeker.gender,
            seeker.country,
            seeker.want,
            seeker.countries,
            since,
        )
        ticket = self._tickets[seeker.session_id] = _Ticket(entry)
        self._search_locally(ticket)
        if self._refresh is None:
            self._refresh = self._clock.callLater(REFRESH_INTERVAL, self._refresh_entries)

    def cancel(self, session_id: str) -> None:
        ticket = self._tickets.pop(session_id, None)
        if ticket is None:
            return
        self._stop_timer(ticket)
        self.engine.cancel(session_id)
        self._unqueued.pop(session_id, None)
        if ticket.queued and ticket.state != "offering" and not self._outage.ongoing:
            self._call(self._queue.withdraw(session_id))

    def forget(self, session_id: str) -> None:
        blocked = self.engine.has_blocks(session_id)
        self.cancel(session_id)
        self.engine.forget(session_id)
        if blocked:  # the matcher keeps the pairs this node blocked until it hears that one of them is gone
            self._link.broadcast({"type": "forget", "session_id": session_id})

    def block(self, a: str, b: str) -> None:
        self.engine.block(a, b)
        self._link.broadcast({"type": "block", "a": a, "b": b})

    def waiting(self) -> int:
        return len(self._tickets)

    def longest_waits(self) -> dict[str, float]:
        """Since when the longest-waiting user of each (gender, want) partition that this node has in the
        shared queue waits ("m:any": time): what its heartbeat tells the other nodes' fairness checks."""
        oldest: dict[str, float] = {}
        for ticket in self._tickets.values():
            if ticket.queued and ticket.state in ("local", "shared"):
                entry = ticket.entry
                partition = f"{entry.gender}:{entry.want}"
                oldest[partition] = min(oldest.get(partition, entry.since), entry.since)
        return oldest

    def shutdown(self) -> None:
        for ticket in self._tickets.values():
            self._stop_timer(ticket)
        for timer in (self._probe, self._refresh, self._send_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._probe = self._refresh = self._send_timer = None

    # --- the local path -------------------------------------------------------------------------------

    def _search_locally(self, ticket: _Ticket) -> None:
        """Pair `ticket`'s user with a user waiting on this node, or let it wait here (and in the shared queue
        once it has waited `QUEUE_DELAY`, or at once if it was queued before)."""
        ticket.state = "local"
        now = self._clock.seconds()
        pair = self.engine.search(ticket.entry.seeker(), now)
        if pair is None:
            if ticket.queued:
                self._enqueue(ticket)
            else:
                self._unqueued[ticket.session_id] = ticket
                if self._send_timer is None:
                    self._send_timer = self._clock.callLater(QUEUE_DELAY, self._send_waiting)
            return
        waiting = self._tickets.get(pair.waiting)
        if waiting is None:  # pragma: no cover - every user in the engine has a ticket
            self.engine.cancel(pair.waiting)
            self._search_locally(ticket)
            return
        if self._outage.ongoing:  # this node alone: as a single node does
            self._start_local(waiting, ticket)
            return
        if not waiting.queued:
            # Nobody else can take the waiting user: only fairness may stand in the way.
            if not self._someone_waits_long(ticket.entry, now):
                self._start_local(waiting, ticket)
                return
            self.engine.retract(pair)
            ticket.queued = True
            ticket.state = "shared"  # for the matcher, who serves the longest-waiting first
            self._enqueue(ticket)
            self._search_locally(waiting)
            return
        waiting.state = ticket.state = "taking"
        taking = self._call(self._queue.take(pair.waiting, ticket.entry, now - FAIR_WAIT))
        taking.addCallback(self._taken, pair, waiting, ticket)
        taking.addErrback(self._fenced, "a local match")

    def _someone_waits_long(self, entry: QueueEntry, now: float) -> bool:
        """Whether, by the latest heartbeats, another node has had a user in the shared queue for longer than
        `FAIR_WAIT` in a partition that suits `entry` by gender and want (countries are not told: it may be
        no partner for it after all, and the matcher then finds it another)."""
        bound = now - FAIR_WAIT
        partitions = [f"{gender}:{want}" for gender, want in partner_partitions(entry.gender, entry.want)]
        return any(
            waits.get(partition, bound + 1) <= bound
            for waits in self.others_waiting()
            for partition in partitions
        )

    def _enqueue(self, ticket: _Ticket) -> None:
        """Write `ticket`'s entry to the shared queue, and tell the matcher if it is this node's."""
        self._unqueued.pop(ticket.session_id, None)
        if self._outage.ongoing:
            return
        ticket.queued = True
        self._call(self._queue.enqueue(ticket.entry))
        if self.matcher is not None:
            self.matcher.nudge()

    def _send_waiting(self) -> None:
        """Send the entries of the users who have waited here `QUEUE_DELAY` to the shared queue."""
        self._send_timer = None
        due = self._clock.seconds() - QUEUE_DELAY
        for ticket in [ticket for ticket in self._unqueued.values() if ticket.entry.since <= due]:
            self._enqueue(ticket)
        if self._unqueued:
            earliest = min(ticket.entry.since for ticket in self._unqueued.values())
            self._send_timer = self._clock.callLater(
                max(0.0, earliest + QUEUE_DELAY - self._clock.seconds()), self._send_waiting
            )

    def _taken(self, take: Take | None, pair: Pair, waiting: _Ticket, arriving: _Ticket) -> None:
        waiting_here, arriving_here = self._current(waiting, "taking"), self._current(arriving, "taking")
        if take is None:  # Redis did not answer: this node decides alone, as while Redis is away
            take = Take.TAKEN
        if take is not Take.TAKEN:
            self.engine.retract(pair)
        if take is Take.TAKEN and waiting_here and arriving_here:
            self._start_local(waiting, arriving)
            return
        if take is Take.GONE:
            if waiting_here:
                self._await(waiting, "claimed")
            if arriving_here:
                self._search_locally(arriving)
            return
        if take is Take.DEFERRED and arriving_here:
            arriving.queued = True
            arriving.state = "shared"
        if waiting_here:
            self._search_locally(waiting)  # it was taken and is alone again, or fairness left it waiting
        if take is Take.TAKEN and arriving_here:
            self._search_locally(arriving)

    def _start_local(self, offer: _Ticket, answer: _Ticket) -> None:
        self._drop(offer)
        self._drop(answer)
        self._switchboard.start_local_match(offer.session_id, answer.session_id)

    # --- the cross-node handshake -----------------------------------------------------------------------

    def paired(self, offer: QueueEntry, answer: QueueEntry) -> bool:
        """The matcher claimed `offer` and `answer` (this node holds its lease): tell the offer's node. False
        if it could not be told (Redis away): the matcher then puts both back."""
        message: NodeMessage = {
            "type": "pair",
            "to": offer.session_id,
            "since": offer.since,
            "partner": answer.session_id,
            "partner_node": answer.node_id,
            "partner_since": answer.since,
        }
        if offer.node_id == self.node_id:
            return self.on_pair(message)
        return self._link.send(offer.node_id, message)

    def on_pair(self, message: NodeMessage) -> bool:
        """`pair`: the matcher claimed this node's user `to` with `partner` of node `partner_node`. False if
        the offer could not be sent (Redis away)."""
        ticket = self._claimed(message["to"], message["since"])
        partner, node, partner_since = message["partner"], message["partner_node"], message["partner_since"]
        if node == self.node_id:
            other = self._claimed(partner, partner_since)
            if ticket is not None and other is not None:
                self._start_local(ticket, other)
            else:
                for alone in (ticket, other):
                    if alone is not None:
                        self._search_locally(alone)
            return True
        if ticket is None:
            self._link.send(node, {"type": "release", "to": partner, "since": partner_since})
            return True
        match_id = secrets.token_urlsafe(9)
        offer = {"type": "offer", "to": partner, "since": partner_since, "match_id": match_id}
        if not self._link.send(node, {**offer, "partner": self._describe(ticket.session_id)}):
            self._search_locally(ticket)
            return False
        self.engine.cancel(ticket.session_id)
        ticket.match_id = match_id
        self._await(ticket, "offering")
        return True

    def on_offer(self, message: NodeMessage, node: str) -> None:
        """`offer` from node `node`: its user (`partner`) is offered match `match_id` with this node's `to`."""
        ticket = self._claimed(message["to"], message["since"])
        partner = read_partner(message["partner"], node)
        reply: NodeMessage = {"type": "refuse", "to": partner.session_id, "match_id": message["match_id"]}
        if ticket is not None:
            reply = {**reply, "type": "accept", "partner": self._describe(ticket.session_id)}
        # Sent before the match starts here: the partner's node hears it before anything relayed in the match.
        if not self._link.send(node, reply) or ticket is None:
            if ticket is not None:
                self._search_locally(ticket)
            return
        self._drop(ticket)
        self._switchboard.start_remote_match(ticket.session_id, message["match_id"], False, partner)

    def on_accept(self, message: NodeMessage, node: str) -> None:
        """`accept` from node `node`: the match this node offered for `to` starts."""
        ticket = self._tickets.get(message["to"])
        partner = read_partner(message["partner"], node)
        if ticket is None or ticket.state != "offering" or ticket.match_id != message["match_id"]:
            # Given up meanwhile: the partner's side has started, and ends now.
            self._link.send(
                node,
                {
                    "type": "left",
                    "to": partner.session_id,
                    "match_id": message["match_id"],
                    "reason": "disconnect",
                },
            )
            return
        self._drop(ticket)
        self._switchboard.start_remote_match(ticket.session_id, message["match_id"], True, partner)

    def on_refuse(self, message: NodeMessage) -> None:
        """`refuse`: the partner of the match offered for `to` had moved on; `to` searches again."""
        ticket = self._tickets.get(message["to"])
        if ticket is not None and ticket.state == "offering" and ticket.match_id == message["match_id"]:
            self._search_locally(ticket)

    def on_release(self, message: NodeMessage) -> None:
        """`release`: the matcher claimed `to` with a user who had moved on; `to` waits again."""
        ticket = self._claimed(message["to"], message["since"])
        if ticket is not None:
            self._search_locally(ticket)

    def _claimed(self, session_id: str, since: float) -> _Ticket | None:
        """The ticket of `session_id` if the matcher's claim is about its current search and it is free to
        take the match; taken out of the engine."""
        ticket = self._tickets.get(session_id)
        if ticket is None or ticket.entry.since != since or ticket.state == "offering":
            return None
        self._stop_timer(ticket)
        self.engine.cancel(session_id)
        return ticket

    def _describe(self, session_id: str) -> dict[str, Any]:
        """What the partner's node is told of this node's user (its profile, and what a report records)."""
        session = self._switchboard.find(session_id)
        assert session is not None  # a ticket's session is searching
        return RemotePartner.of(session, self.node_id).describe()

    # --- timers and Redis ------------------------------------------------------------------------------

    def _await(self, ticket: _Ticket, state: _State) -> None:
        """Put `ticket` in `state` until its handshake ends, or `HANDSHAKE_TIMEOUT` passes."""
        self._stop_timer(ticket)
        ticket.state = state
        ticket.timer = self._clock.callLater(HANDSHAKE_TIMEOUT, self._gave_up, ticket)

    def _gave_up(self, ticket: _Ticket) -> None:
        ticket.timer = None
        if self._tickets.get(ticket.session_id) is ticket:
            self._search_locally(ticket)

    def _stop_timer(self, ticket: _Ticket) -> None:
        if ticket.timer is not None and ticket.timer.active():
            ticket.timer.cancel()
        ticket.timer = None

    def _drop(self, ticket: _Ticket) -> None:
        """`ticket`'s user is matched: it waits no more."""
        self._stop_timer(ticket)
        self._tickets.pop(ticket.session_id, None)
        self._unqueued.pop(ticket.session_id, None)
        self.engine.cancel(ticket.session_id)
        if ticket.rewritten and not self._outage.ongoing:
            self._call(self._queue.withdraw(ticket.session_id))

    def _current(self, ticket: _Ticket, state: _State) -> bool:
        return self._tickets.get(ticket.session_id) is ticket and ticket.state == state

    def _call(self, call: Deferred[_T]) -> Deferred[_T | None]:
        """The result of a call to Redis; None, with the outage noted, if it failed or was not answered in
        time."""
        result: Deferred[_T | None] = call.addTimeout(CALL_TIMEOUT, self._clock)
        return result.addCallbacks(self._answered, self._unanswered)

    def _answered(self, result: _T) -> _T:
        self._outage.succeeded("the matchmaking of node {node} reaches Redis again", node=self.node_id)
        return result

    def _unanswered(self, failure: Failure) -> None:
        self._outage.failed(
            "the matchmaking of node {node} cannot reach Redis ({error}): matching on this node alone until it "
            "is back",
            node=self.node_id,
            error=failure.getErrorMessage() or repr(failure.value),
        )
        if self._probe is None:
            self._probe = self._clock.callLater(PROBE_INTERVAL, self._try_redis)

    def _try_redis(self) -> None:
        self._probe = None
        trying = self._call(self._queue.lease_holder())
        trying.addCallback(self._tried)
        trying.addErrback(self._fenced, "trying Redis again")

    def _tried(self, _: object) -> None:
        if not self._outage.ongoing:
            self.register_again()

    def _refresh_entries(self) -> None:
        """Write the entries of the users waiting here and in the shared queue again: a claim whose pair was
        lost without an outage (its matcher died between the claim and the message) leaves a user waiting
        here but gone from the shared queue, which this puts back. (If the pair was only late, the user is
        matched by it and its copy is withdrawn then.)"""
        self._refresh = None
        if not self._outage.ongoing:
            for ticket in self._tickets.values():
                if ticket.queued and ticket.state in ("local", "shared"):
                    ticket.rewritten = True
                    self._call(self._queue.enqueue(ticket.entry))
        if self._tickets:
            self._refresh = self._clock.callLater(REFRESH_INTERVAL, self._refresh_entries)

    def register_again(self) -> None:
        """Write every waiting user's entry in the shared queue again (Redis is back, or lost its data);
        claimed users wait again, as their pairs may be lost."""
        for ticket in list(self._tickets.values()):
            if ticket.state in ("local", "shared"):
                self._enqueue(ticket)
            elif ticket.state == "claimed":
                self._search_locally(ticket)

    def _fenced(self, failure: Failure, what: str) -> None:
        self._log.failure("matchmaking failed: {what}", failure, what=what)

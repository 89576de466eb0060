"""The switchboard: sessions, the queue and matches, driven by the protocol and an injected clock."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.ice import IcePolicy
from vchat.matching import MatchingEngine, Pair, Seeker
from vchat.outcome import Outcome
from vchat.protocol.accounts import AccountView
from vchat.protocol.bans import BanNotice
from vchat.protocol.behaviour import IBehaviourObserver
from vchat.protocol.counters import SignalingCounters
from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError
from vchat.protocol.handover import HandedMatch, HandedPrevious, HandedSession
from vchat.protocol.matchmaker import IMatchmaker, LocalMatchmaker
from vchat.protocol.messages import Hello, Report, Search
from vchat.protocol.partner import RemotePartner
from vchat.protocol.remote import INodeLink, NodeMessage
from vchat.protocol.reports import Filing, IReportSink
from vchat.protocol.session import IPeer, Match, PreviousMatch, Session, SessionState

_DEFAULT_SEARCH = Search("any", frozenset())
_NODE_MARK = "~"  # between a resume token's random part (URL-safe base64) and its node's id
REPORT_WINDOW = 60.0
"""Seconds after a match ended during which either user may still report it."""


class Switchboard:
    """Owns every live session and match on this node; the protocol calls it, it calls peers.

    In a cluster a match may join one of this node's sessions with a session of another node: the partner is
    then a stand-in `Session` whose `node` names its node, and what would reach it goes to that node through
    `link` (docs/cluster.md); what that node sends back comes in through the `remote_*` methods.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        engine: MatchingEngine,
        resume_grace: float,
        ice: IcePolicy | None = None,
    ) -> None:
        self._clock = clock
        self._resume_grace = resume_grace
        self._ice = ice or IcePolicy()
        self._sessions: dict[str, Session] = {}
        self._by_token: dict[str, Session] = {}
        self._online = 0
        self.counters = SignalingCounters()
        self.matchmaker: IMatchmaker = LocalMatchmaker(engine, clock, self._start_pair)
        # The other nodes of a cluster, for matches with their sessions; None on a single node.
        self.link: INodeLink | None = None
        # This node's id in a cluster (resume tokens name it, so another node knows whom to ask); None alone.
        self.node_id: str | None = None
        # What `welcome`, `searching` and `pong` say is online: in a cluster, every node's users.
        self.count_online: Callable[[], int] = lambda: self._online
        # Told what each session does, for automatic moderation; None: nobody watches.
        self.observer: IBehaviourObserver | None = None
        # Resume tokens of sessions ended by a ban -> (session id, when forgotten), oldest first: a resume with
        # one within the grace window is checked against the ban instead of quietly starting a fresh session.
        self._banned_tokens: dict[str, tuple[str, float]] = {}

    @property
    def online(self) -> int:
        """Sessions with a live connection to this node."""
        return self._online

    @property
    def online_shown(self) -> int:
        """What clients are told is online: this node's sessions, or in a cluster every node's."""
        return self.count_online()

    @property
    def sessions(self) -> int:
        """Sessions kept, including those waiting to be resumed."""
        return len(self._sessions)

    @property
    def waiting(self) -> int:
        """Sessions of this node waiting for a partner."""
        return self.matchmaker.waiting()

    @property
    def matched(self) -> int:
        """Sessions connected and in a match; counted on each call, for metrics."""
        return sum(session.state is SessionState.MATCHED for session in self._sessions.values())

    # --- life cycle -------------------------------------------------------------------------------------

    def open(
        self,
        hello: Hello,
        peer: IPeer,
        country: str | None,
        host: str = "localhost",
        address: str | None = None,
        handed: HandedSession | None = None,
        account: AccountView | None = None,
    ) -> Session:
        """Start a session for `peer`, or resume the one its token names, or the one another node `handed`
        over; sends `welcome`.

        `host` is the host name the client connected to, for ICE URLs when no public host is configured;
        `address` is the client's address (kept on the session for IP bans, never sent); `account` is the
        logged-in user's (its login cookie's, on this connection), which a resumed session takes too.
        """
        session = self._by_token.pop(hello.resume, None) if hello.resume else None
        if session is None and handed is not None:
            session = self._adopt(handed)
        if session is None:
            session = self._new_session(hello, peer, country, account)
            session.address = address
            self._send(session, self._welcome(session, host, resumed=False))
            return session
        session.address, session.device_id, session.client = address, hello.device_id, dict(hello.client)
        session.account = account or session.account
        self._resume(session, peer, host)
        return session

    def resumed_id(self, token: str | None) -> str | None:
        """The id of the session a `hello`'s resume token names (also one a ban ended within the grace window),
        for checking bans before the session is resumed; None for no token or an unknown one."""
        if token is None:
            return None
        session = self._by_token.get(token)
        if session is not None:
            return session.session_id
        self._forget_banned_tokens()
        banned = self._banned_tokens.get(token)
        return banned[0] if banned is not None else None

    def _new_session(
        self, hello: Hello, peer: IPeer, country: str | None, account: AccountView | None
    ) -> Session:
        session_id = secrets.token_urlsafe(12)
        # The gender the user said, else its account's (from its login provider), else "u".
        gender = hello.gender or (account.gender if account is not None else None) or "u"
        session = Session(session_id, gender, country, hello.lang, self._new_token(), peer)
        session.account = account
        session.started_at = self._clock.seconds()
        session.device_id = hello.device_id
        session.client = dict(hello.client)
        self._sessions[session_id] = session
        self._by_token[session.resume_token] = session
        self._online += 1
        self._log.info("session {session_id} started", session_id=session_id)
        return session

    def _new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        return token if self.node_id is None else f"{token}{_NODE_MARK}{self.node_id}"

    def token_node(self, token: str | None) -> str | None:
        """The other node that holds the session a resume token names (so it must be handed over), or None:
        no token, one of this node, or not a cluster's."""
        if token is None or self.node_id is None or token in self._by_token:
            return None
        _, mark, node = token.partition(_NODE_MARK)
        return node if mark and node and node != self.node_id else None

    def hand_over(self, token: str, to_node: str) -> tuple[HandedSession | None, str | None]:
        """Give the session `token` names to node `to_node`, where its client resumes: its state, which this
        node forgets (a connection it still has is closed as replaced; a partner here now has a partner on
        `to_node`). (None, session id) for a session a ban ended within the grace window, (None, None) for an
        unknown token."""
        session = self._by_token.get(token)
        if session is None:
            self._forget_banned_tokens()
            banned = self._banned_tokens.get(token)
            return None, None if banned is None else banned[0]
        state = self._handed_state(session)
        peer = session.peer
        self._detach(session)
        if peer is not None:
            peer.close(CloseCode.REPLACED, "session resumed on another connection")
        if session.state is SessionState.SEARCHING:
            self.matchmaker.cancel(session.session_id)
        self.matchmaker.engine.forget(session.session_id)  # its blocks go with its state
        if session.away_timer is not None:
            session.away_timer.cancel()
            session.away_timer = None
        match = session.match
        if match is not None and match.partner_of(session).node is None:
            # The partner stays here: the session becomes a stand-in on its new node, away until it is back.
            stand_in = RemotePartner.of(session, to_node).stand_in()
            stand_in.match = match
            if match.offer is session:
                match.offer = stand_in
            else:
                match.answer = stand_in
        session.match = None
        session.enter(SessionState.CLOSED)
        del self._sessions[session.session_id]
        del self._by_token[token]
        if self.observer is not None:
            self.observer.session_ended(session)
        self._log.info(
            "session {session_id} handed to node {node}", session_id=session.session_id, node=to_node
        )
        return state, None

    def _handed_state(self, session: Session) -> HandedSession:
        match, previous = session.match, session.previous
        handed_match = None
        if match is not None:
            partner = match.partner_of(session)
            handed_match = HandedMatch(
                match.match_id,
                match.offer is session,
                match.started_at,
                RemotePartner.of(partner, partner.node or self.node_id or ""),
                partner.peer is None,
            )
        return HandedSession(
            session.session_id,
            session.gender,
            session.country,
            session.lang,
            session.device_id,
            dict(session.client),
            session.started_at,
            session.filters,
            handed_match,
            None
            if previous is None
            else HandedPrevious(
                previous.match_id, previous.partner, previous.ended_at, previous.partner_session
            ),
            self.matchmaker.engine.blocked_with(session.session_id),
        )

    def _adopt(self, handed: HandedSession) -> Session:
        """A session handed over by another node, kept here from now on, not yet connected (AWAY): `open`
        resumes it."""
        session = Session(
            handed.session_id, handed.gender, handed.country, handed.lang, "", None, SessionState.AWAY
        )
        session.started_at, session.filters = handed.started_at, handed.filters
        for other in handed.blocked:
            self.matchmaker.engine.block(session.session_id, other)
        if handed.previous is not None:
            previous = handed.previous
            session.previous = PreviousMatch(
                previous.match_id, previous.partner, previous.ended_at, previous.partner_session
            )
        self._sessions[session.session_id] = session
        handed_match = handed.match
        if handed_match is None:
            return session
        partner_info = handed_match.partner
        partner = (
            self._sessions.get(partner_info.session_id) if partner_info.node_id == self.node_id else None
        )
        match = None if partner is None else partner.match
        if partner is not None and match is not None and match.match_id == handed_match.match_id:
            # The partner is here: its stand-in of this session gives way to the session itself.
            if match.offer.session_id == session.session_id:
                match.offer = session
            else:
                match.answer = session
        else:
            stand_in = partner_info.stand_in()
            pair = (session, stand_in) if handed_match.offers else (stand_in, session)
            match = Match(handed_match.match_id, *pair, handed_match.started_at)
            stand_in.match = match
            if not handed_match.partner_away:
                stand_in.peer = _RemotePeer(self, stand_in)
        session.match = match
        return session

    def _resume(self, session: Session, peer: IPeer, host: str) -> None:
        old_peer, was_away = session.peer, session.state is SessionState.AWAY
        session.resume_token = self._new_token()
        self._by_token[session.resume_token] = session
        session.peer = peer
        if old_peer is not None:
            old_peer.close(CloseCode.REPLACED, "session resumed on another connection")
        else:
            self._online += 1
        if session.away_timer is not None:
            session.away_timer.cancel()
            session.away_timer = None
        if was_away:
            session.enter(SessionState.MATCHED if session.match else SessionState.IDLE)
        self._log.info("session {session_id} resumed", session_id=session.session_id)
        self._send(session, self._welcome(session, host, resumed=True))
        if was_away and session.match is not None:
            self._send_partner(session, {"type": "partner_resumed", "match_id": session.match.match_id})

    def _welcome(self, session: Session, host: str, resumed: bool) -> dict[str, Any]:
        match = session.match
        return {
            "type": "welcome",
            "session_id": session.session_id,
            "country": session.country,
            "ice_servers": self._ice.servers(session.session_id, host, self._clock.seconds()),
            "ice_transport_policy": self._ice.transport_policy,
            "resume_token": session.resume_token,
            "online": self.online_shown,
            "resumed": resumed,
            "match": match.describe_for(session) if match else None,
            "account": None if session.account is None else session.account.describe(),
        }

    def lost(self, session: Session, peer: IPeer, abnormal: bool) -> None:
        """`peer`'s connection ended; an abnormal loss keeps the session for the grace window."""
        if session.peer is not peer or session.state is SessionState.CLOSED:
            return  # an old connection of a resumed session
        self._detach(session)
        if not abnormal:
            self._close(session)
            return
        if session.state is SessionState.SEARCHING:
            self.matchmaker.cancel(session.session_id)
        session.enter(SessionState.AWAY)
        session.away_timer = self._clock.callLater(self._resume_grace, self._grace_over, session)
        if session.match is not None:
            self._send_partner(session, {"type": "partner_reconnecting", "match_id": session.match.match_id})

    def _grace_over(self, session: Session) -> None:
        session.away_timer = None
        try:
            self._close(session)
        except Exception:
            self._log.failure(
                "closing session {session_id} after its grace window", session_id=session.session_id
            )

    def end(self, session: Session) -> None:
        """End a session for good, as when its connection closed cleanly or the server closed it."""
        self._detach(session)
        self._close(session)

    def _detach(self, session: Session) -> None:
        if session.peer is not None:
            session.peer = None
            self._online -= 1

    def _close(self, session: Session) -> None:
        if session.state is SessionState.CLOSED:
            return
        self._end_match(session, "disconnect")
        self.matchmaker.forget(session.session_id)
        if session.away_timer is not None:
            session.away_timer.cancel()
            session.away_timer = None
        session.enter(SessionState.CLOSED)
        del self._sessions[session.session_id]
        self._by_token.pop(session.resume_token, None)
        if self.observer is not None:
            self.observer.session_ended(session)
        self._log.info("session {session_id} ended", session_id=session.session_id)

    def find(self, session_id: str) -> Session | None:
        """The live session with this id (also one waiting to be resumed), or None."""
        return self._sessions.get(session_id)

    def kick(self, session_id: str) -> bool:
        """End a session now, as a moderator asked: its client gets `error` `kicked` and is closed with 4005, a
        partner gets `partner_left` reason "disconnect". The user may come back with a new session (a kick is
        not a ban). False if no session has this id."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        message = {
            "type": "error",
            "code": ErrorCode.KICKED.value,
            "message": "a moderator ended your session",
        }
        self._end_telling(session, message, CloseCode.KICKED, "kicked")
        self._log.info("session {session_id} kicked", session_id=session_id)
        return True

    def end_account(self, user_id: str) -> int:
        """End every session of the account `user_id` now (it was deleted): each client gets `error`
        `account_deleted` and is closed with 4010, a partner gets `partner_left` reason "disconnect". Returns
        how many ended."""
        message = {
            "type": "error",
            "code": ErrorCode.ACCOUNT_DELETED.value,
            "message": "your account was deleted",
        }
        ended = [
            session for session in self._sessions.values() if session.account and session.user_id == user_id
        ]
        for session in ended:
            self._end_telling(session, message, CloseCode.ACCOUNT_DELETED, "account deleted")
        return len(ended)

    def _end_telling(self, session: Session, message: dict[str, Any], code: CloseCode, reason: str) -> None:
        """End `session` for good, its client told `message` and closed with `code`."""
        peer = session.peer
        if peer is not None:
            peer.send(message)
        self.end(session)
        if peer is not None:
            peer.close(code, reason)

    def close_banned(self, notice_for: Callable[[Session], BanNotice | None]) -> int:
        """End every session that a ban issued now bars (`notice_for` gives its notice, None if none does): its
        client gets `banned` and is closed with 4004, a partner gets `partner_left` reason "disconnect", a
        search leaves the queue, and a session waiting to be resumed ends too. Returns how many ended."""
        banned = [
            (session, notice)
            for session in self._sessions.values()
            if (notice := notice_for(session)) is not None
        ]
        self._forget_banned_tokens()
        for session, notice in banned:
            grace_end = self._clock.seconds() + self._resume_grace
            self._banned_tokens[session.resume_token] = (session.session_id, grace_end)
            self._end_telling(session, notice.message(), CloseCode.BANNED, "banned")
            self._log.info("session {session_id} ended by a ban", session_id=session.session_id)
        return len(banned)

    def _forget_banned_tokens(self) -> None:
        now = self._clock.seconds()
        while self._banned_tokens:
            token, (_, until) = next(iter(self._banned_tokens.items()))
            if until > now:
                return
            del self._banned_tokens[token]

    def shutdown(self) -> None:
        """Close every connection (going away) and forget every session: the server is stopping."""
        self.matchmaker.shutdown()
        self._banned_tokens.clear()
        for session in list(self._sessions.values()):
            peer = session.peer
            self.end(session)
            if peer is not None:
                peer.close(CloseCode.SHUTTING_DOWN, "server shutting down")

    # --- searching and matching ---------------------------------------------------------------------

    def search(self, session: Session, search: Search) -> None:
        """Enter (or re-enter) the queue with new filters; refused while matched."""
        if session.state is SessionState.MATCHED:
            raise ProtocolError(ErrorCode.IN_MATCH, "you are in a match: send next or stop first")
        self._enqueue(session, search)

    def next(self, session: Session) -> None:
        """Leave the current match, if any, and search again with the last filters."""
        self._end_match(session, "next")
        self._enqueue(session, session.filters or _DEFAULT_SEARCH)

    def stop(self, session: Session) -> None:
        """Leave the current match and the queue."""
        self._end_match(session, "stop")
        self.matchmaker.cancel(session.session_id)
        session.enter(SessionState.IDLE)
        self._send(session, {"type": "idle"})

    def _enqueue(self, session: Session, search: Search) -> None:
        session.filters = search
        session.enter(SessionState.SEARCHING)
        self._send(session, {"type": "searching", "online": self.online_shown})
        seeker = Seeker(session.session_id, session.gender, session.country, search.want, search.countries)
        self.matchmaker.search(seeker, self._clock.seconds())

    def _start_pair(self, pair: Pair) -> None:
        offer, answer = self._sessions[pair.waiting], self._sessions[pair.arriving]
        self._start_match(Match(secrets.token_urlsafe(9), offer, answer, self._clock.seconds()))

    def start_local_match(self, offer_id: str, answer_id: str) -> bool:
        """Match two searching sessions of this node that a cluster's matchmaker paired, `offer_id` making the
        offer; False, changing nothing, unless both are here and searching."""
        offer, answer = self._sessions.get(offer_id), self._sessions.get(answer_id)
        if not (self._searching(offer) and self._searching(answer)) or offer is answer:
            return False
        assert offer is not None and answer is not None
        self._start_pair(Pair(offer_id, answer_id))
        return True

    def start_remote_match(
        self, session_id: str, match_id: str, offers: bool, partner: RemotePartner
    ) -> bool:
        """Match a searching session of this node with `partner`, a session of another node, in `match_id`
        (`offers`: whether this node's session makes the offer); False, changing nothing, unless the session
        is here and searching."""
        session = self._sessions.get(session_id)
        if not self._searching(session):
            return False
        assert session is not None
        stand_in = partner.stand_in()
        stand_in.peer = _RemotePeer(self, stand_in)
        now = self._clock.seconds()
        pair = (session, stand_in) if offers else (stand_in, session)
        self._start_match(Match(match_id, *pair, now))
        return True

    def _searching(self, session: Session | None) -> bool:
        return session is not None and session.state is SessionState.SEARCHING

    def _start_match(self, match: Match) -> None:
        self.counters.matches += 1
        local = [session for session in match.sessions if session.node is None]
        for session in match.sessions:
            session.match = match
        for session in local:
            session.enter(SessionState.MATCHED)
        for session in local:
            self._send(session, {"type": "matched", **match.describe_for(session)})
        if self.observer is not None:
            for session in local:
                self.observer.match_started(session)

    def _end_match(self, session: Session, reason: str) -> None:
        match = session.match
        if match is None:
            return
        partner = match.partner_of(session)
        session.match = partner.match = None
        now = self._clock.seconds()
        for side in match.sessions:
            if side.node is not None:
                continue  # a stand-in keeps nothing
            # Kept for a report just after the match, in memory only; it replaces the one before.
            other = match.partner_of(side)
            side.previous = PreviousMatch(match.match_id, other.identity(), now, other.session_id)
            side.reports = (
                {match.match_id: side.reports[match.match_id]} if match.match_id in side.reports else {}
            )
        if partner.state is SessionState.MATCHED:
            partner.enter(SessionState.IDLE)
        self._send_partner_of(
            session, partner, {"type": "partner_left", "match_id": match.match_id, "reason": reason}
        )
        if self.observer is not None:
            if session.node is None:
                self.observer.match_ended(session, now - match.started_at, False)
            if partner.node is None:
                self.observer.match_ended(partner, now - match.started_at, True)

    # --- relaying -----------------------------------------------------------------------------------

    def relay(self, session: Session, match_id: str, message: dict[str, Any]) -> None:
        """Pass a signal, chat or typing message to the partner in match `match_id`."""
        match = session.match
        if match is None or match.match_id != match_id:
            raise ProtocolError(ErrorCode.NO_MATCH, "no such match: it may have just ended")
        partner = match.partner_of(session)
        if partner.peer is None:
            raise ProtocolError(
                ErrorCode.PARTNER_RECONNECTING, "your partner lost the connection and may come back"
            )
        partner.peer.send(message)
        self.counters.relayed[message["type"]] += 1
        if partner.node is not None and partner.peer is None:  # the other node cannot be reached
            self._end_match(partner, "disconnect")

    def chat(self, session: Session, match_id: str, text: str) -> None:
        """Pass a chat message to the partner in match `match_id`; the observer, if any, is told its text."""
        self.relay(session, match_id, {"type": "chat", "match_id": match_id, "text": text})
        if self.observer is not None:
            self.observer.chat_sent(session, text)

    # --- reports ------------------------------------------------------------------------------------------

    def report(self, session: Session, report: Report, sink: IReportSink) -> Deferred[str]:
        """File `session`'s report of the partner in its current match, or in the previous one within
        `REPORT_WINDOW` seconds of its end; fires with the report's id. A second report of the same match
        gets the first one's id and changes nothing. The two are never matched again."""
        now = self._clock.seconds()
        match, previous = session.match, session.previous
        if match is not None and match.match_id == report.match_id:
            partner = match.partner_of(session)
            reported, reported_session = partner.identity(), partner.session_id
        elif (
            previous is not None
            and previous.match_id == report.match_id
            and now < previous.ended_at + REPORT_WINDOW
        ):
            reported, reported_session = previous.partner, previous.partner_session
        else:
            if previous is not None and now >= previous.ended_at + REPORT_WINDOW:
                session.previous = None  # past the window: nothing to keep it for
            raise ProtocolError(ErrorCode.NO_MATCH, "no such match, or it ended too long ago to report")
        filed = session.reports.get(report.match_id)
        if filed is not None:
            return filed.observe()
        self.matchmaker.block(session.session_id, reported_session)  # the engine knows sessions, not accounts
        filing = Filing(session.identity(), reported, report.reason, report.comment, report.snapshot, now)
        self.counters.reports += 1
        filed = session.reports[report.match_id] = Outcome()
        try:
            storing = sink.file_report(filing)
        except Exception:
            storing = fail()

        def failed(failure: Failure) -> Failure:
            if session.reports.get(report.match_id) is filed:
                del session.reports[report.match_id]  # a later try may succeed
            return failure

        storing.addErrback(failed).addBoth(filed.fire)
        return filed.observe()

    # --- other nodes --------------------------------------------------------------------------------

    def remote_relay(self, to: str, match_id: str, message: dict[str, Any]) -> bool:
        """Deliver a message relayed by the partner of session `to` on another node (dropped while `to` is
        away); False if `to` is in no match `match_id` with a partner there (it ended)."""
        session, _ = self._remote_match(to, match_id)
        if session is None:
            return False
        self._send(session, message)
        return True

    def remote_left(self, to: str, match_id: str, reason: str) -> None:
        """The partner of session `to` on another node left match `match_id` for `reason`."""
        _, stand_in = self._remote_match(to, match_id)
        if stand_in is not None:
            self._end_match(stand_in, reason)

    def remote_away(self, to: str, match_id: str) -> None:
        """The partner of session `to` on another node lost its connection and may come back."""
        session, stand_in = self._remote_match(to, match_id)
        if session is not None and stand_in is not None and stand_in.peer is not None:
            stand_in.peer = None
            self._send(session, {"type": "partner_reconnecting", "match_id": match_id})

    def remote_back(self, to: str, match_id: str, node: str) -> None:
        """The partner of session `to` is connected again, on node `node` (its own, or the one it resumed on)."""
        session, stand_in = self._remote_match(to, match_id)
        if session is None or stand_in is None:
            return
        stand_in.node = node
        if stand_in.peer is None:
            stand_in.peer = _RemotePeer(self, stand_in)
            self._send(session, {"type": "partner_resumed", "match_id": match_id})

    def remote_node_lost(self, node_id: str | None = None) -> int:
        """End every match with a partner on node `node_id` (every other node's, for None), as if the partner
        had disconnected: that node died, or Redis cannot be reached. Returns how many ended."""
        stand_ins = [
            session.match.partner_of(session)
            for session in self._sessions.values()
            if session.match is not None
            and (node := session.match.partner_of(session).node) is not None
            and node_id in (None, node)
        ]
        for stand_in in stand_ins:
            self._end_match(stand_in, "disconnect")
        return len(stand_ins)

    def _remote_match(self, to: str, match_id: str) -> tuple[Session | None, Session | None]:
        """This node's session `to` and its partner's stand-in, if it is in match `match_id` with a session of
        another node; (None, None) if not."""
        session = self._sessions.get(to)
        match = None if session is None else session.match
        if session is None or match is None or match.match_id != match_id:
            return None, None
        stand_in = match.partner_of(session)
        return (session, stand_in) if stand_in.node is not None else (None, None)

    def _to_node(self, stand_in: Session, message: NodeMessage) -> bool:
        """Send `message` to the node of `stand_in`; False if it could not be sent."""
        link = self.link
        assert stand_in.node is not None
        return link is not None and link.send(stand_in.node, message)

    # --- delivery -----------------------------------------------------------------------------------

    def _send(self, session: Session, message: dict[str, Any]) -> None:
        if session.peer is not None:
            session.peer.send(message)

    def _send_partner(self, session: Session, message: dict[str, Any]) -> None:
        if session.match is not None:
            self._send_partner_of(session, session.match.partner_of(session), message)

    def _send_partner_of(self, session: Session, partner: Session, message: dict[str, Any]) -> None:
        """Tell `partner` of `session` `message` (`partner_left`, `partner_reconnecting` or `partner_resumed`),
        through its node if it is another node's."""
        if partner.node is None:
            self._send(partner, message)
            return
        kind = {"partner_left": "left", "partner_reconnecting": "away", "partner_resumed": "back"}[
            message["type"]
        ]
        note: NodeMessage = {"type": kind, "to": partner.session_id, "match_id": message["match_id"]}
        if kind == "left":
            note["reason"] = message["reason"]
        self._to_node(partner, note)


@implementer(IPeer)
class _RemotePeer:
    """What a stand-in for another node's session speaks through: relays go to that node. A relay that
    cannot be sent (Redis away) makes the stand-in unreachable, and the switchboard ends the match."""

    __slots__ = ("_stand_in", "_switchboard")

    def __init__(self, switchboard: Switchboard, stand_in: Session) -> None:
        self._switchboard = switchboard
        self._stand_in = stand_in

    def send(self, message: dict[str, Any]) -> None:
        stand_in = self._stand_in
        match = stand_in.match
        assert match is not None
        note: NodeMessage = {
            "type": "relay",
            "to": stand_in.session_id,
            "from": match.partner_of(stand_in).session_id,
            "match_id": match.match_id,
            "message": message,
        }
        if not self._switchboard._to_node(stand_in, note):
            stand_in.peer = None

    def close(self, code: int, reason: str) -> None:
        raise RuntimeError("a session of another node is not closed from here")

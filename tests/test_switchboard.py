"""The switchboard on a driven clock with in-memory peers: sessions, matches, grace windows, rematching."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vchat.matching import MatchingEngine
from vchat.protocol.bans import BanNotice
from vchat.protocol.behaviour import IBehaviourObserver
from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError
from vchat.protocol.messages import Hello, Search
from vchat.protocol.session import IPeer, Session, SessionState
from vchat.protocol.switchboard import Switchboard
from vchat.testing import RecordingPeer

ANY = Search("any", frozenset())


def hello(gender: str = "m", resume: str | None = None) -> Hello:
    return Hello(gender, None, {}, resume)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(clock: Clock) -> Switchboard:
    return Switchboard(clock, MatchingEngine(rematch_after=30.0), resume_grace=15.0)


def join(board: Switchboard, gender: str = "m") -> tuple[Session, RecordingPeer]:
    peer = RecordingPeer()
    session = board.open(hello(gender), peer, country=None)
    peer.take()
    return session, peer


def test_recording_peer_provides_ipeer() -> None:
    verifyObject(IPeer, RecordingPeer())


def test_match_and_end(board: Switchboard) -> None:
    a, pa = join(board)
    b, pb = join(board, "f")
    board.search(a, ANY)
    board.search(b, ANY)
    assert pa.types() == ["searching", "matched"] and pb.types() == ["searching", "matched"]
    assert a.match is b.match and a.state is b.state is SessionState.MATCHED
    assert board.waiting == 0
    board.stop(b)
    assert a.match is None and a.state is SessionState.IDLE
    assert pa.sent[-1]["type"] == "partner_left" and pb.sent[-1] == {"type": "idle"}


def test_two_people_alone_meet_again_after_rematch_after(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board)
    board.search(a, ANY)
    board.search(b, ANY)
    first = a.match
    board.next(a)
    board.search(b, ANY)
    pa.take()
    pb.take()
    clock.advance(29)
    assert a.state is b.state is SessionState.SEARCHING
    clock.advance(1.5)
    assert a.state is b.state is SessionState.MATCHED
    assert a.match is not first
    assert [m["type"] for m in pa.take()] == ["matched"]


def test_abnormal_loss_keeps_session_for_the_grace_window(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board)
    board.search(a, ANY)
    board.search(b, ANY)
    pb.take()
    match_id = b.match.match_id
    board.lost(a, pa, abnormal=True)
    assert a.state is SessionState.AWAY and board.online == 1 and board.sessions == 2
    assert pb.take() == [{"type": "partner_reconnecting", "match_id": match_id}]
    with pytest.raises(ProtocolError) as caught:
        board.relay(b, match_id, {"type": "chat"})
    assert caught.value.code is ErrorCode.PARTNER_RECONNECTING
    clock.advance(14.9)
    assert a.state is SessionState.AWAY
    clock.advance(0.1)
    assert a.state is SessionState.CLOSED and board.sessions == 1
    assert pb.take() == [{"type": "partner_left", "match_id": match_id, "reason": "disconnect"}]
    assert b.state is SessionState.IDLE


def test_resume_within_grace(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board)
    board.search(a, ANY)
    board.search(b, ANY)
    match_id = a.match.match_id
    token = a.resume_token
    board.lost(a, pa, abnormal=True)
    clock.advance(10)
    pa2 = RecordingPeer()
    resumed = board.open(hello(resume=token), pa2, country=None)
    assert resumed is a and a.state is SessionState.MATCHED and a.resume_token != token
    welcome = pa2.sent[0]
    assert welcome["resumed"] is True and welcome["match"]["match_id"] == match_id
    assert pb.sent[-1] == {"type": "partner_resumed", "match_id": match_id}
    clock.advance(10)  # the old grace timer was cancelled
    assert a.state is SessionState.MATCHED
    # the old connection's late close changes nothing
    board.lost(a, pa, abnormal=False)
    assert a.state is SessionState.MATCHED


def test_searching_session_leaves_the_queue_when_lost(board: Switchboard) -> None:
    a, pa = join(board)
    board.search(a, ANY)
    board.lost(a, pa, abnormal=True)
    assert board.waiting == 0
    b, pb = join(board)
    board.search(b, ANY)
    assert pb.types() == ["searching"]


def test_clean_close_ends_at_once(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board)
    board.search(a, ANY)
    board.search(b, ANY)
    match_id = a.match.match_id
    board.lost(a, pa, abnormal=False)
    assert pb.sent[-1] == {"type": "partner_left", "match_id": match_id, "reason": "disconnect"}
    assert board.sessions == 1 and not clock.getDelayedCalls()


def test_shutdown_closes_everything(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board)
    board.search(a, ANY)
    board.next(b)
    board.lost(b, pb, abnormal=True)
    board.shutdown()
    assert board.sessions == board.online == board.waiting == 0
    assert pa.closed_with is not None and pa.closed_with[0] == 4000
    assert not clock.getDelayedCalls()


def test_illegal_state_moves_are_refused() -> None:
    session = Session("s", "m", None, None, "t", None)
    session.enter(SessionState.CLOSED)
    with pytest.raises(RuntimeError):
        session.enter(SessionState.IDLE)


def test_close_banned_ends_the_sessions_picked(board: Switchboard, clock: Clock) -> None:
    a, pa = join(board)
    b, pb = join(board, "f")
    c, pc = join(board)
    board.search(a, ANY)
    board.search(b, ANY)
    board.search(c, ANY)
    for peer in (pa, pb, pc):
        peer.take()
    notice = BanNotice("spam", 1234.5)
    assert board.close_banned(lambda session: notice if session in (a, c) else None) == 2
    assert pa.sent == [{"type": "banned", "reason": "spam", "until": 1235}]
    assert pa.closed_with is not None and pa.closed_with[0] == CloseCode.BANNED == 4004
    assert pc.types() == ["banned"] and pb.types() == ["partner_left"]
    assert pb.sent[0]["reason"] == "disconnect" and pb.closed_with is None
    assert a.state is c.state is SessionState.CLOSED and b.state is SessionState.IDLE
    assert board.waiting == 0 and board.sessions == 1 and board.online == 1
    assert board.close_banned(lambda session: None) == 0


def test_the_token_of_a_banned_session_names_it_for_the_grace_window(
    board: Switchboard, clock: Clock
) -> None:
    a, _ = join(board)
    token = a.resume_token
    assert board.resumed_id(token) == a.session_id
    assert board.resumed_id(None) is None and board.resumed_id("unknown") is None
    board.close_banned(lambda session: BanNotice("spam", None))
    assert board.resumed_id(token) == a.session_id
    clock.advance(15.0)
    assert board.resumed_id(token) is None


def test_a_session_keeps_its_address_and_device_id(board: Switchboard) -> None:
    peer = RecordingPeer()
    session = board.open(Hello("m", None, {}, None, "dev-1"), peer, country=None, address="192.0.2.1")
    assert (session.address, session.device_id) == ("192.0.2.1", "dev-1")
    resumed = board.open(Hello("m", None, {}, session.resume_token), RecordingPeer(), None, address="::1")
    assert resumed is session and (session.address, session.device_id) == ("::1", None)


@implementer(IBehaviourObserver)
class RecordingObserver:
    """Records what the switchboard tells an observer, by session id."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def match_started(self, session: Session) -> None:
        self.events.append(("started", session.session_id))

    def match_ended(self, session: Session, seconds: float, partner_left: bool) -> None:
        self.events.append(("ended", session.session_id, seconds, partner_left))

    def chat_sent(self, session: Session, text: str) -> None:
        self.events.append(("chat", session.session_id, text))

    def session_ended(self, session: Session) -> None:
        self.events.append(("gone", session.session_id))


def test_the_observer_is_told_what_each_session_does(board: Switchboard, clock: Clock) -> None:
    observer = RecordingObserver()
    verifyObject(IBehaviourObserver, observer)
    board.observer = observer
    a, _ = join(board)
    b, pb = join(board, "f")
    board.search(a, ANY)
    clock.advance(5)
    board.search(b, ANY)
    assert a.match is not None
    match_id = a.match.match_id
    clock.advance(2.5)
    board.chat(a, match_id, "hi")
    assert pb.sent[-1] == {"type": "chat", "match_id": match_id, "text": "hi"}
    board.next(b)
    board.end(a)
    assert observer.events == [
        ("started", a.session_id),
        ("started", b.session_id),
        ("chat", a.session_id, "hi"),
        ("ended", b.session_id, 2.5, False),
        ("ended", a.session_id, 2.5, True),
        ("gone", a.session_id),
    ]
    with pytest.raises(ProtocolError):
        board.chat(b, match_id, "too late")  # refused, and nothing is told
    assert observer.events[-1] == ("gone", a.session_id)


def test_a_kick_ends_the_session_and_tells_the_partner(board: Switchboard, clock: Clock) -> None:
    clock.advance(50.0)
    a, pa = join(board)
    b, pb = join(board, "f")
    assert board.find(a.session_id) is a and a.started_at == 50.0
    board.search(a, ANY)
    board.search(b, ANY)
    pa.take(), pb.take()
    assert board.kick(a.session_id)
    assert pa.take() == [
        {"type": "error", "code": ErrorCode.KICKED.value, "message": "a moderator ended your session"}
    ]
    assert pa.closed_with == (CloseCode.KICKED, "kicked") and int(CloseCode.KICKED) == 4005
    assert [m["type"] for m in pb.take()] == ["partner_left"] and b.state is SessionState.IDLE
    assert board.find(a.session_id) is None and a.state is SessionState.CLOSED
    assert not board.kick(a.session_id) and not board.kick("nobody")
    assert board.open(hello(resume=a.resume_token), RecordingPeer(), None) is not a  # a kick is not a resume

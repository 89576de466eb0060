"""Bans end to end in memory: refused at hello, enforced at once on live sessions, timed, lifted, kept across a
restart; and the service's wiring to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from vchat.matching import MatchingEngine
from vchat.moderation.service import ModerationService
from vchat.protocol.bans import IBanCheck
from vchat.protocol.messages import Hello
from vchat.protocol.switchboard import Switchboard
from vchat.store.interface import AlreadyResolved, IStore
from vchat.store.memory import MemoryStore
from vchat.store.records import Ban, BanTarget, Flag
from vchat.store.service import StoreService
from vchat.store.sqlite import open_sqlite_store
from vchat.store.testing import a_ban, a_flag
from vchat.testing import OFFERED, MemoryClient, MemoryServer, RecordingPeer, fired, hello_message, result_of

CODECS = ["json", "msgpack"]
DAY = 86400.0


@pytest.fixture
def memory() -> MemoryServer:
    server = MemoryServer(store=MemoryStore())
    server.clock.advance(1_000_000.0)
    return server


def moderation(server: MemoryServer) -> ModerationService:
    assert server.moderation is not None
    return server.moderation


def ban(server: MemoryServer, kind: str, value: str, duration: float | None = DAY, **more: Any) -> Ban:
    banned: Ban = fired(moderation(server).ban(kind, value, "insults", "harassment", duration, **more))  # type: ignore[arg-type]
    server.flush()
    return banned


def connect(server: MemoryServer, codec: str = "json", address: str = "127.0.0.1") -> MemoryClient:
    return server.connect(OFFERED[codec], address=address)


def assert_banned(client: MemoryClient, until: int | None, rid: object = None) -> None:
    """`client` got `banned` (with `until`, and `re` if `rid`) and was closed with 4004."""
    message = client.expect("banned")
    assert message == {
        "type": "banned",
        "reason": "insults",
        "until": until,
        **({"re": rid} if rid is not None else {}),
    }
    assert client.received() == []
    assert client.closed is not None and client.closed[1] == 4004


def test_the_service_provides_ibancheck(memory: MemoryServer) -> None:
    assert verifyObject(IBanCheck, moderation(memory))
    assert moderation(memory).name == "moderation"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("kind", "value", "address", "device_id"),
    [
        ("ip", "192.0.2.7", "192.0.2.7", None),
        ("ip", "198.51.100.0/24", "198.51.100.200", None),
        ("ip", "2001:db8:1:2::/64", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", None),
        ("device_id", "dev-1_X", "127.0.0.1", "dev-1_X"),
    ],
)
def test_a_banned_client_is_refused_at_hello(
    memory: MemoryServer, codec: str, kind: str, value: str, address: str, device_id: str | None
) -> None:
    timed = ban(memory, kind, value, duration=DAY + 0.5)
    client = connect(memory, codec, address)
    client.send(hello_message(id=3, client={"device_id": device_id} if device_id else {}))
    assert timed.ends_at is not None
    assert_banned(client, until=int(timed.ends_at) + 1, rid=3)
    assert memory.switchboard.sessions == 0
    assert connect(memory, codec, "203.0.113.1").hello(client={"device_id": "other"})["resumed"] is False


@pytest.mark.parametrize("codec", CODECS)
def test_a_permanent_ban_says_until_null(memory: MemoryServer, codec: str) -> None:
    ban(memory, "ip", "10.0.0.0/8", duration=None)
    client = connect(memory, codec, "10.9.8.7")
    client.send(hello_message())
    assert_banned(client, until=None)


def test_addresses_of_other_networks_and_families_are_let_in(memory: MemoryServer) -> None:
    ban(memory, "ip", "198.51.100.0/24")
    ban(memory, "ip", "2001:db8:1:2::/64")
    for address in ("198.51.101.1", "2001:db8:1:3::1", "::1"):
        connect(memory, "json", address).hello()


@pytest.mark.parametrize("codec", CODECS)
def test_a_timed_ban_ends_on_the_clock(memory: MemoryServer, codec: str) -> None:
    ban(memory, "device_id", "d", duration=60.0)
    memory.advance(59.0)
    client = connect(memory, codec)
    client.send(hello_message(client={"device_id": "d"}))
    client.expect("banned")
    memory.advance(1.0)
    connect(memory, codec).hello(client={"device_id": "d"})
    assert moderation(memory).active == 0


@pytest.mark.parametrize("codec", CODECS)
def test_a_ban_closes_a_matched_session_at_once(memory: MemoryServer, codec: str) -> None:
    offerer, answerer, matched, _ = memory.matched_pair(codec, "json")
    ban(memory, "user_id", offerer.peer._session.session_id, duration=None)  # type: ignore[union-attr]
    assert_banned(offerer, until=None)
    assert answerer.expect("partner_left") == {
        "type": "partner_left",
        "match_id": matched["match_id"],
        "reason": "disconnect",
    }
    assert answerer.closed is None and memory.switchboard.sessions == 1


@pytest.mark.parametrize("codec", CODECS)
def test_a_ban_by_address_closes_every_session_from_it_and_empties_the_queue(
    memory: MemoryServer, codec: str
) -> None:
    searching = connect(memory, codec, "2001:db8::5")
    searching.hello(client={"device_id": "d1"})
    searching.send({"type": "search"})
    searching.expect("searching")
    idle = connect(memory, codec, "2001:db8::6")
    idle.hello()
    other = connect(memory, codec, "2001:db9::1")
    other.hello()
    assert memory.switchboard.waiting == 1
    ban(memory, "ip", "2001:db8::/64")
    for client in (searching, idle):
        client.expect("banned")
        assert client.closed is not None and client.closed[1] == 4004
    assert memory.switchboard.waiting == 0 and memory.switchboard.sessions == 1
    assert other.closed is None and other.received() == []


def test_a_ban_by_device_closes_the_session_that_named_it(memory: MemoryServer) -> None:
    client = connect(memory)
    client.hello(client={"device_id": "phone-7"})
    ban(memory, "device_id", "phone-7")
    client.expect("banned")
    assert memory.switchboard.sessions == 0


def test_a_ban_ends_a_session_waiting_to_be_resumed_and_its_token_is_refused(memory: MemoryServer) -> None:
    offerer, answerer, _, _ = memory.matched_pair()
    session = offerer.peer._session
    assert session is not None
    session_id, welcome_token = session.session_id, session.resume_token
    offerer.drop()
    answerer.expect("partner_reconnecting")
    ban(memory, "user_id", session_id)
    assert answerer.expect("partner_left")["reason"] == "disconnect"
    assert memory.switchboard.sessions == 1
    again = connect(memory, "json", "203.0.113.9")
    again.send(hello_message(id="r", resume=welcome_token))
    again.expect("banned")
    assert again.closed is not None and again.closed[1] == 4004


@pytest.mark.parametrize("codec", CODECS)
def test_a_resume_of_a_banned_session_is_refused(memory: MemoryServer, codec: str) -> None:
    client = connect(memory, codec, "192.0.2.1")
    welcome = client.hello()
    client.drop()
    # The session waits to be resumed when its user is banned: it ends, and its token is refused, not taken
    # for an unknown one that starts a fresh session.
    ban(memory, "user_id", welcome["session_id"])
    resumed = connect(memory, codec, "192.0.2.1")
    resumed.send(hello_message(resume=welcome["resume_token"]))
    assert_banned(resumed, until=int(memory.clock.seconds() + DAY))


def test_a_resume_from_a_banned_address_leaves_the_session_resumable(memory: MemoryServer) -> None:
    client = connect(memory, "json", "192.0.2.1")
    welcome = client.hello()
    client.drop()
    ban(memory, "ip", "203.0.113.0/24")
    refused = connect(memory, "json", "203.0.113.5")
    refused.send(hello_message(resume=welcome["resume_token"]))
    refused.expect("banned")
    back = connect(memory, "json", "192.0.2.2").hello(resume=welcome["resume_token"])
    assert back["resumed"] is True and back["session_id"] == welcome["session_id"]


@pytest.mark.parametrize("codec", CODECS)
def test_lifting_a_ban_lets_the_user_back_in(memory: MemoryServer, codec: str) -> None:
    banned = ban(memory, "ip", "192.0.2.0/24", duration=None)
    client = connect(memory, codec, "192.0.2.9")
    client.send(hello_message())
    client.expect("banned")
    lifted = fired(moderation(memory).lift(banned.id))
    assert lifted.id == banned.id and lifted.ended_at == memory.clock.seconds()
    assert fired(moderation(memory).lift("no-such-ban")) is None
    connect(memory, codec, "192.0.2.9").hello()


def test_a_bad_ban_fails_and_changes_nothing(memory: MemoryServer) -> None:
    service = moderation(memory)
    for args in [
        ("ip", "not-a-network", "r", "spam", None),
        ("planet", "earth", "r", "spam", None),
        ("user_id", "u", "", "spam", None),
        ("user_id", "u", "r", "shoplifting", None),
        ("user_id", "u", "r", "spam", 0.0),
        ("user_id", "u", "r", "spam", float("inf")),
    ]:
        result = result_of(service.ban(*args))  # type: ignore[arg-type]
        assert isinstance(result, Failure) and result.check(ValueError), args
    assert service.active == 0


def test_bans_loaded_at_start_apply_to_sessions_let_in_before() -> None:
    store, clock, opening = MemoryStore(), Clock(), Deferred[IStore]()
    clock.advance(10.0)
    switchboard = Switchboard(clock, MatchingEngine(), 15.0)
    stores = StoreService(lambda: opening, clock, on_failure=lambda: None)
    service = ModerationService(stores, switchboard, clock)
    stores.startService()
    service.startService()
    peer = RecordingPeer()
    session = switchboard.open(Hello("u", None, {}, None), peer, country=None)
    assert service.check(session.session_id, None, None) is None  # not loaded yet: let in
    fired(store.add_ban(a_ban(target=BanTarget("user_id", session.session_id), ends_at=None), None))
    fired(store.add_ban(a_ban(target=BanTarget("user_id", "u-1"), created_at=5.0, ends_at=20.0), None))
    fired(store.add_ban(a_ban(target=BanTarget("user_id", "u-2"), created_at=5.0, ends_at=10.0), None))
    opening.callback(store)
    assert fired(service.whenLoaded()) is None
    assert service.active == 2  # the one that had ended is not loaded
    assert service.check("u-1", None, None) is not None
    assert peer.types()[-1] == "banned" and peer.closed_with is not None and peer.closed_with[0] == 4004
    assert switchboard.sessions == 0


def test_a_store_that_cannot_load_bans_stops_the_process() -> None:
    stopped: list[bool] = []
    store = MemoryStore()
    store.closed = True  # every call fails
    stores = StoreService(lambda: succeed(store), Clock(), on_failure=lambda: None)
    service = ModerationService(
        stores, Switchboard(Clock(), MatchingEngine(), 15.0), Clock(), lambda: stopped.append(True)
    )
    stores.startService()
    service.startService()
    assert isinstance(result_of(service.whenLoaded()), Failure)
    assert stopped == [True]


@pytest_twisted.ensureDeferred
async def test_bans_survive_a_restart(tmp_path: Path) -> None:
    async def started() -> tuple[StoreService, ModerationService]:
        stores = StoreService(
            lambda: open_sqlite_store(reactor, str(tmp_path)), reactor, on_failure=lambda: None
        )
        switchboard = Switchboard(reactor, MatchingEngine(), 15.0)
        service = ModerationService(stores, switchboard, reactor)
        stores.startService()
        service.startService()
        await service.whenLoaded()
        return stores, service

    stores, service = await started()
    await service.ban("ip", "2001:db8:7::/48", "insults", "harassment", None)
    await service.ban("device_id", "d-9", "insults", "spam", 3600.0)
    lifted = await service.ban("user_id", "s-1", "insults", "spam", None)
    await service.lift(lifted.id)
    service.stopService()
    await stores.stopService()

    stores, service = await started()
    try:
        assert service.active == 2
        notice = service.check(None, "2001:db8:7:1::1", None)
        assert notice is not None and notice.until is None and notice.reason == "insults"
        timed = service.check("someone", None, "d-9")
        assert timed is not None and timed.until is not None
        assert service.check("s-1", "2001:db8:8::1", "d-8") is None
    finally:
        service.stopService()
        await stores.stopService()


def stored_flag(server: MemoryServer, user_id: str, device_id: str | None) -> str:
    store = fired(moderation(server)._store.whenOpen())
    flag: Flag = fired(store.add_flag(a_flag(user_id=user_id, device_id=device_id)))
    return flag.id


@pytest.mark.parametrize("codec", CODECS)
def test_resolving_a_flag_with_a_ban_bans_the_flagged_user_and_device(
    memory: MemoryServer, codec: str
) -> None:
    offerer, answerer, _, _ = memory.matched_pair(codec, "json")
    session_id = offerer.peer._session.session_id  # type: ignore[union-attr]
    flag_id = stored_flag(memory, session_id, "d-7")
    flag = fired(moderation(memory).resolve_flag(flag_id, "ban", DAY, "insults", "harassment"))
    memory.flush()
    assert (flag.status, flag.resolved_at) == ("resolved", memory.clock.seconds())
    assert_banned(offerer, until=int(memory.clock.seconds() + DAY))
    assert answerer.expect("partner_left")["reason"] == "disconnect"
    notice = moderation(memory).check(None, None, "d-7")
    assert notice is not None and notice.reason == "insults"
    with pytest.raises(AlreadyResolved):
        fired(moderation(memory).resolve_flag(flag_id, "dismiss"))


def test_dismissing_a_flag_bans_nobody(memory: MemoryServer) -> None:
    flag_id = stored_flag(memory, "u-5", "d-5")
    flag = fired(moderation(memory).resolve_flag(flag_id))
    assert flag.status == "resolved"
    assert moderation(memory).active == 0
    assert fired(moderation(memory).resolve_flag("no-such-flag", "ban")) is None


def test_a_bad_flag_decision_fails_and_changes_nothing(memory: MemoryServer) -> None:
    flag_id = stored_flag(memory, "u-5", None)
    service = moderation(memory)
    for bad in [
        lambda: service.resolve_flag(flag_id, "warn"),  # type: ignore[arg-type]
        lambda: service.resolve_flag(flag_id, "ban", -1.0),
        lambda: service.resolve_flag(flag_id, "ban", None, reason=""),
        lambda: service.resolve_flag(flag_id, "ban", None, category="shoplifting"),  # type: ignore[arg-type]
    ]:
        result = result_of(bad())
        assert isinstance(result, Failure) and result.check(ValueError)
    store = fired(service._store.whenOpen())
    assert fired(store.get_flag(flag_id)).status == "open"
    assert service.active == 0

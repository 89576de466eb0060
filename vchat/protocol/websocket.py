"""The signaling WebSocket endpoint: decode frames, dispatch to the switchboard, encode replies."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from itertools import chain
from typing import Any, assert_never, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.addresses import AddressCounter, Network, address_key, client_address, is_trusted, proxy_country
from vchat.failurelog import ThrottledFailureLog
from vchat.geo import ICountryLookup, NoCountries
from vchat.origins import origin_allowed
from vchat.protocol.accounts import AccountView, IAccountLookup
from vchat.protocol.bans import BanNotice, IBanCheck
from vchat.protocol.codec import JSON, REPORT_HEAD_BYTES, Codec, choose_codec, starts_as_report
from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError
from vchat.protocol.handover import HandedSession
from vchat.protocol.messages import (
    Chat,
    ClientMessage,
    Hello,
    Next,
    Ping,
    Report,
    RequestId,
    Search,
    Signal,
    Stop,
    Typing,
    message_type,
    parse_message,
    request_id,
)
from vchat.protocol.reports import IReportSink
from vchat.protocol.session import IPeer, Session
from vchat.protocol.switchboard import Switchboard
from vchat.ratelimit import TokenBucket

WEBSOCKET_PATH = "/ws"
_STRIKE_CODES = frozenset(
    {ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LONG, ErrorCode.RATE_LIMITED}
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection limits of the signaling endpoint."""

    max_message_bytes: int = 65536
    max_report_bytes: int = (
        409600  # a `report` may be this large (see `SignalingProtocol.onMessageFrameData`)
    )
    message_rate: float = 20.0
    message_burst: int = 60
    max_bad_messages: int = 10
    bad_message_window: float = 60.0
    hello_timeout: float = 10.0
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 10.0
    max_backlog_bytes: int = 1048576
    max_connections_per_address: int = 50  # 0: no limit


@implementer(IPushProducer)
class OutgoingBacklog:
    """Counts what is sent to a client while its transport's buffer is full (a client that does not read)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.queued = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0

    def stopProducing(self) -> None:
        self.paused = False

    def admit(self, size: int) -> bool:
        """Count `size` more bytes; False once the client is more than `limit` bytes behind."""
        if self.paused:
            self.queued += size
        return self.queued <= self.limit


class ClockTimers:
    """Autobahn's own protocol timers (heartbeat, handshake timeouts) on the factory's clock.

    Autobahn schedules them through txaio on the global reactor, whatever reactor its factory was given; one
    delayed call each (txaio batches them into 200 ms buckets, which a reactor's heap does not need).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(
        self, delay: float, function: Callable[..., object], *args: object, **kwargs: object
    ) -> IDelayedCall:
        """Call `function` after `delay` seconds of the clock."""
        return self._clock.callLater(delay, function, *args, **kwargs)


_HOST_NAME = re.compile(r"[A-Za-z0-9.:-]{1,253}")


def _host_name(host: str) -> str:
    """The host the client connected to (Autobahn strips the port), if it looks like a host name or address."""
    host = host.strip("[]")
    return host if _HOST_NAME.fullmatch(host) else "localhost"


@implementer(IPeer)
class SignalingProtocol(WebSocketServerProtocol):
    """One client connection; thin: all decisions are the switchboard's."""

    _log = Logger()
    factory: SignalingFactory

    def __init__(self) -> None:
        super().__init__()
        self._codec: Codec = JSON
        self._session: Session | None = None
        self._limiter: TokenBucket | None = None
        self._strikes: TokenBucket | None = None
        self._hello_timer: IDelayedCall | None = None
        self._host = "localhost"
        self._country: str | None = None
        self._backlog: OutgoingBacklog | None = None
        self._address_key: str | bytes | None = None
        self._address: str | None = None
        self._large_report = False  # the message being received is over max_message_bytes and a report
        self._opening = False  # a hello waits for another node to hand its session over, or for the account
        self._login_cookie: str | None = None  # the login cookie the handshake carried

    # --- autobahn callbacks ---------------------------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if request.path != WEBSOCKET_PATH:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, f"the signaling endpoint is {WEBSOCKET_PATH}")
        self._host = _host_name(request.host)
        factory = self.factory
        # Before the per-address count: a refused handshake takes no place there.
        if not origin_allowed(request.origin, factory.allowed_origins):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "this web origin may not open WebSockets here")
        peer = getattr(cast(ITCPTransport, self.transport).getPeer(), "host", "")
        address = client_address(peer, request.headers.get("x-forwarded-for"), factory.trusted_proxies)
        key = address_key(address)
        if not factory.connections_per_address.acquire(key):
            raise ConnectionDeny(429, "too many connections from your address")
        self._address_key = key
        self._address = address
        vouched = is_trusted(peer, factory.trusted_proxies)
        self._country = (vouched and proxy_country(request.headers.get("cf-ipcountry"))) or (
            factory.countries.country_of(address)
        )
        if factory.accounts is not None:  # no logins on this server: no cookie to read
            self._login_cookie = login_cookie(request.headers.get("cookie"), factory.accounts.cookie_name)
        self._codec = choose_codec(request.protocols)
        return self._codec.subprotocol if self._codec.subprotocol in request.protocols else None

    def onOpen(self) -> None:
        try:
            self._start()
        except Exception:
            self.factory.failures.failure("opening a connection")
            self.dropConnection(abort=True)

    def _start(self) -> None:
        factory = self.factory
        limits, now = factory.limits, factory.clock.seconds()
        self._limiter = TokenBucket(limits.message_rate, limits.message_burst, now)
        self._strikes = TokenBucket(
            limits.max_bad_messages / limits.bad_message_window, limits.max_bad_messages, now
        )
        self._hello_timer = factory.clock.callLater(limits.hello_timeout, self._hello_overdue)
        self._backlog = OutgoingBacklog(limits.max_backlog_bytes)
        self.registerProducer(self._backlog, True)

    # Size limits. Autobahn's own limits are set to max_report_bytes; these hooks hold every other message to
    # max_message_bytes. Once a message's declared length (the sum of its frames' headers, known before their
    # payload arrives) passes max_message_bytes, its first REPORT_HEAD_BYTES bytes must show a `report`
    # (`starts_as_report`), or the connection fails with 1009 at once; so at most those few bytes of a large
    # message are held before it is refused, whoever sends it.

    def onMessageBegin(self, isBinary: bool) -> None:
        self._large_report = False
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        self._check_size(b"")

    def onMessageFrameData(self, payload: bytes) -> None:
        # A small message (nearly all of them) costs one comparison here.
        if self.message_data_total_length > self.factory.limits.max_message_bytes and not self._check_size(
            payload
        ):
            return
        super().onMessageFrameData(payload)

    def _check_size(self, arriving: bytes) -> bool:
        """False (and the connection failed with 1009) once the message is too large for what it is."""
        if self.failedByMe:
            return False
        limit = self.factory.limits.max_message_bytes
        if self._large_report or self.message_data_total_length <= limit:
            return True
        verdict = starts_as_report(self._first_bytes(arriving), self.message_is_binary)
        if verdict is None:
            return True  # fewer than REPORT_HEAD_BYTES bytes so far: not yet known
        if verdict:
            self._large_report = True
            return True
        self._max_message_size_exceeded(
            self.message_data_total_length, limit, f"a message other than report over {limit} bytes"
        )
        return False

    def _first_bytes(self, arriving: bytes) -> bytes:
        """The first REPORT_HEAD_BYTES bytes of the message: from what Autobahn holds of it, then `arriving`."""
        head = b""
        for chunk in chain(self.message_data, self.frame_data or (), (arriving,)):
            head += chunk[: REPORT_HEAD_BYTES - len(head)]
            if len(head) >= REPORT_HEAD_BYTES:
                break
        return head

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != self.STATE_OPEN:
            return
        rid: RequestId = None
        try:
            now = self.factory.clock.seconds()
            if self._limiter is not None and not self._limiter.take(now):
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many messages: slow down")
            raw = self._codec.decode(payload)
            limit = self.factory.limits.max_message_bytes
            if len(payload) > limit and raw.get("type") != "report":  # a second "type" key, say
                self._max_message_size_exceeded(
                    len(payload), limit, f"a message other than report over {limit}"
                )
                return
            rid = request_id(raw)
            if self._session is None and message_type(raw) != "hello":
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, "say hello first", CloseCode.HELLO_REQUIRED)
            self._dispatch(parse_message(raw), rid)
            return
        except ProtocolError as error:
            refusal = error
        except Exception:
            # A bug, but maybe one a client can trigger at will: it costs that client, not the log.
            self.factory.failures.failure("handling a client message")
            refusal = ProtocolError(ErrorCode.BAD_MESSAGE, "the server could not handle this message")
        try:
            self._refuse(refusal, rid)
        except Exception:
            self.factory.failures.failure("refusing a client message")

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        key, self._address_key = self._address_key, None
        if key is not None:
            self.factory.connections_per_address.release(key)
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_hello_timer()
        session, self._session = self._session, None
        if session is not None:
            try:
                self.factory.switchboard.lost(session, self, abnormal=not wasClean)
            except Exception:
                self.factory.failures.failure("losing a session")

    # --- IPeer ----------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Encode and send one message, if the connection is still open.

        A client that stops reading is dropped once it is `max_backlog_bytes` behind, as if its connection had
        been lost (it may resume), so that it cannot make the server buffer without bound.
        """
        if self.state != self.STATE_OPEN:
            return
        data = self._codec.encode(message)
        if self._backlog is not None and not self._backlog.admit(len(data)):
            self._log.info("dropping a client that does not read")
            self.dropConnection(abort=True)
            return
        self.sendMessage(data, isBinary=self._codec.binary)

    def close(self, code: int, reason: str) -> None:
        """Close with `code`; the session, if any, is no longer this connection's."""
        self._session = None
        self.sendClose(code=int(code), reason=reason)

    # --- handlers -------------------------------------------------------------------------------------

    def _dispatch(self, message: ClientMessage, rid: RequestId) -> None:
        match message:
            case Hello():
                self.handle_hello(message, rid)
            case Search():
                self.handle_search(message, rid)
            case Next():
                self.handle_next(message, rid)
            case Stop():
                self.handle_stop(message, rid)
            case Signal():
                self.handle_signal(message, rid)
            case Chat():
                self.handle_chat(message, rid)
            case Typing():
                self.handle_typing(message, rid)
            case Ping():
                self.handle_ping(message, rid)
            case Report():
                self.handle_report(message, rid)
            case _:
                assert_never(message)

    def _require_session(self) -> Session:
        session = self._session
        if session is None:  # onMessage lets only hello through before a session exists
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, "say hello first", CloseCode.HELLO_REQUIRED)
        return session

    def handle_hello(self, hello: Hello, rid: RequestId) -> None:
        if self._session is not None or self._opening:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "hello was already received")
        self._cancel_hello_timer()
        factory = self.factory
        accounts = factory.accounts
        if accounts is None or self._login_cookie is None:
            if factory.require_login:
                raise ProtocolError(
                    ErrorCode.LOGIN_REQUIRED, "log in to use this service", CloseCode.LOGIN_REQUIRED
                )
            self._hello(hello, rid, None)
            return
        # The account is read before the hello is answered.
        self._opening = True
        reading = accounts.account_of(self._login_cookie)
        reading.addErrback(self._anonymous, "reading a login's account")  # the store is away: no login
        reading.addCallback(lambda account: self._hello(hello, rid, account))
        reading.addErrback(lambda failure: factory.failures.failure("answering a hello", failure))

    def _anonymous(self, failure: Failure, what: str) -> None:
        """Log why a hello goes on without what it waited for (an account, a session of another node)."""
        self.factory.failures.failure(what, failure)

    def _hello(self, hello: Hello, rid: RequestId, account: AccountView | None) -> None:
        """Go on with `hello` from the user of `account` (None: anonymous)."""
        self._opening = False
        switchboard = self.factory.switchboard
        if account is None and self.factory.require_login:
            self._refuse(
                ProtocolError(
                    ErrorCode.LOGIN_REQUIRED, "your login expired: log in again", CloseCode.LOGIN_REQUIRED
                ),
                rid,
            )
            return
        node = switchboard.token_node(hello.resume)
        if node is not None and switchboard.link is not None and hello.resume is not None:
            # The session is another node's: it is handed over before this one answers.
            self._opening = True
            fetching = switchboard.link.fetch_session(node, hello.resume)
            fetching.addErrback(self._anonymous, "taking a session over from another node")  # a new session
            fetching.addCallback(lambda found: self._open(hello, rid, account, *(found or (None, None))))
            fetching.addErrback(lambda failure: self.factory.failures.failure("answering a hello", failure))
            return
        self._open(hello, rid, account, None, switchboard.resumed_id(hello.resume))

    def _open(
        self,
        hello: Hello,
        rid: RequestId,
        account: AccountView | None,
        handed: HandedSession | None,
        user_id: str | None,
    ) -> None:
        """Open the session `hello` asks for (`handed` over by another node, if it was), unless a ban bars
        the account, `user_id` (the resumed session's), the device or the address."""
        self._opening = False
        switchboard, bans = self.factory.switchboard, self.factory.bans
        if handed is not None:
            user_id = handed.session_id
        connected = self.state == self.STATE_OPEN
        if bans is not None:
            notice = self._ban_notice(
                bans, account.user_id if account is not None else user_id, hello.device_id
            )
            if notice is None and account is not None and user_id is not None:
                notice = self._ban_notice(bans, user_id, None)  # the resumed session's own
            if notice is not None:
                if connected:
                    self._refuse_banned(notice, rid)
                return
        if not connected and handed is None:
            return
        session = switchboard.open(
            hello,
            self,
            country=self._country,
            host=self._host,
            address=self._address,
            handed=handed,
            account=account,
        )
        if connected:
            self._session = session
        else:  # closed while the session was handed over: it waits to be resumed, as after any loss
            switchboard.lost(session, self, abnormal=True)

    def _ban_notice(self, bans: IBanCheck, user_id: str | None, device_id: str | None) -> BanNotice | None:
        """The ban that bars this client, if any. A bug in the check lets the client in (and is logged within
        the budget) rather than shutting every client out of the service."""
        try:
            return bans.check(user_id, self._address, device_id)
        except Exception:
            self.factory.failures.failure("checking bans")
            return None

    def _refuse_banned(self, notice: BanNotice, rid: RequestId) -> None:
        """Tell a banned client why and until when, and close with 4004; no session is started."""
        reply = notice.message()
        if rid is not None:
            reply["re"] = rid
        self.send(reply)
        self._log.info("refusing a banned client")
        self.sendClose(code=int(CloseCode.BANNED), reason="banned")

    def handle_search(self, search: Search, rid: RequestId) -> None:
        self.factory.switchboard.search(self._require_session(), search)

    def handle_next(self, message: Next, rid: RequestId) -> None:
        self.factory.switchboard.next(self._require_session())

    def handle_stop(self, message: Stop, rid: RequestId) -> None:
        self.factory.switchboard.stop(self._require_session())

    def handle_signal(self, signal: Signal, rid: RequestId) -> None:
        relayed = {"type": "signal", "match_id": signal.match_id, "payload": signal.payload}
        self.factory.switchboard.relay(self._require_session(), signal.match_id, relayed)

    def handle_chat(self, chat: Chat, rid: RequestId) -> None:
        self.factory.switchboard.chat(self._require_session(), chat.match_id, chat.text)

    def handle_typing(self, typing: Typing, rid: RequestId) -> None:
        relayed = {"type": "typing", "match_id": typing.match_id}
        self.factory.switchboard.relay(self._require_session(), typing.match_id, relayed)

    def handle_ping(self, ping: Ping, rid: RequestId) -> None:
        pong: dict[str, Any] = {"type": "pong", "online": self.factory.switchboard.online_shown}
        if rid is not None:
            pong["re"] = rid
        self.send(pong)

    def handle_report(self, report: Report, rid: RequestId) -> None:
        sink = self.factory.reports
        if sink is None:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "this server takes no reports")
        filed = self.factory.switchboard.report(self._require_session(), report, sink)
        filed.addCallbacks(self._reported, self._report_failed, callbackArgs=(rid,), errbackArgs=(rid,))

    def _reported(self, report_id: str, rid: RequestId) -> None:
        """The report is stored: tell the client, if it is still connected."""
        reply: dict[str, Any] = {"type": "reported", "report_id": report_id}
        if rid is not None:
            reply["re"] = rid
        self.send(reply)

    def _report_failed(self, failure: Failure, rid: RequestId) -> None:
        """The store failed: the client may send the report again."""
        try:
            failure.raiseException()
        except Exception:
            self.factory.failures.failure("storing a report")
        reply: dict[str, Any] = {
            "type": "error",
            "code": ErrorCode.BAD_MESSAGE.value,
            "message": "the server could not store the report: send it again",
        }
        if rid is not None:
            reply["re"] = rid
        self.send(reply)

    def _hello_overdue(self) -> None:
        self._hello_timer = None
        try:
            self._refuse(
                ProtocolError(ErrorCode.HELLO_REQUIRED, "no hello in time", CloseCode.HELLO_REQUIRED), None
            )
        except Exception:
            self.factory.failures.failure("closing a connection that sent no hello")

    def _refuse(self, error: ProtocolError, rid: RequestId) -> None:
        """The one error path: an `error` message, then a close when the error is fatal or too frequent."""
        reply: dict[str, Any] = {"type": "error", "code": error.code.value, "message": error.message}
        if rid is not None:
            reply["re"] = rid
        self.send(reply)
        close = error.close
        if close is None and error.code in _STRIKE_CODES:
            strikes = self._strikes
            if strikes is not None and not strikes.take(self.factory.clock.seconds()):
                close = CloseCode.TOO_MANY_ERRORS
        if close is None:
            return
        self._log.info("closing a connection: {code}", code=error.code.value)
        session, self._session = self._session, None
        if session is not None:
            self.factory.switchboard.end(session)
        self.sendClose(
            code=int(close), reason=error.message if close == error.close else "too many bad messages"
        )


def login_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header, or None (no header, no such cookie, a header that does not
    parse)."""
    if not header or len(header) > 8192:
        return None
    try:
        cookies = SimpleCookie(header)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return None if morsel is None else morsel.value


class SignalingFactory(WebSocketServerFactory):
    """Makes `SignalingProtocol`s; holds the clock, the limits and the switchboard they share."""

    protocol = SignalingProtocol  # type: ignore[assignment]  # Autobahn's factory typing predates protocols

    def __init__(
        self,
        switchboard: Switchboard,
        limits: ConnectionLimits,
        clock: IReactorTime,
        countries: ICountryLookup | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        bans: IBanCheck | None = None,
        reports: IReportSink | None = None,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(reactor=clock)
        self._batched_timer = ClockTimers(clock)
        self.switchboard = switchboard
        self.limits = limits
        self.clock = clock
        self.countries: ICountryLookup = countries or NoCountries()
        self.trusted_proxies = trusted_proxies
        self.bans = bans  # asked at every hello; None: nobody is banned
        self.reports = reports  # stores `report`s; None: they are refused
        self.allowed_origins = allowed_origins  # normalised by `web_origin`; empty: any origin, or none
        # Reads the account a login cookie names (vchat.accounts); None: no logins on this server.
        self.accounts: IAccountLookup | None = None
        self.require_login = False  # a hello without a valid login is refused (4009)
        self.failures = ThrottledFailureLog(clock)
        self.connections_per_address = AddressCounter(limits.max_connections_per_address)
        self.setProtocolOptions(
            # Only a report may be this large; `SignalingProtocol._check_size` holds the rest to max_message_bytes.
            maxFramePayloadSize=max(limits.max_report_bytes, limits.max_message_bytes),
            maxMessagePayloadSize=max(limits.max_report_bytes, limits.max_message_bytes),
            autoPingInterval=limits.heartbeat_interval,
            autoPingTimeout=limits.heartbeat_timeout,
            openHandshakeTimeout=limits.hello_timeout,
            closeHandshakeTimeout=5,
            failByDrop=False,
            perMessageCompressionAccept=lambda offers: None,
            allowNullOrigin=True,  # `origin_allowed` decides; this option otherwise refuses "null" with HTTP 400
        )

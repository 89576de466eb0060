"""`twistd vchat`: options (command line and TOML file) and the service tree."""

from __future__ import annotations

import os
from functools import partial

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from vchat.accounts.config import ACCOUNT_SETTINGS, account_routes, check_account_options
from vchat.addresses import proxy_network
from vchat.admin.api import AdminApi
from vchat.admin.figures import ClusterSources, Figures
from vchat.admin.service import AdminService
from vchat.admin.token import admin_token, check_token
from vchat.admin.views import session_view
from vchat.cluster.presence import check_node_id
from vchat.geo import GeoIPService, ICountryLookup, NoCountries
from vchat.ice import IcePolicy, stun_url, turn_url
from vchat.listener import StartupGuard
from vchat.matching import MatchingEngine
from vchat.moderation.rules import IModerationRule, load_rules
from vchat.moderation.service import ModerationService
from vchat.moderation.webhook_config import WEBHOOK_SETTINGS, check_webhook_options, webhook_service
from vchat.options import (
    Setting,
    SettingsOptions,
    integer,
    number,
    server_endpoint,
    server_endpoint_or_none,
    text,
)
from vchat.origins import web_origin
from vchat.protocol.service import SignalingService
from vchat.protocol.switchboard import Switchboard
from vchat.protocol.websocket import ConnectionLimits, SignalingFactory
from vchat.reactors import IServerReactor, installed_reactor
from vchat.redis_address import parse_redis_url, redis_url
from vchat.rlimit import OpenFilesLimitService
from vchat.services import (
    ServiceContext,
    ServiceControl,
    ServiceTree,
    check_plugin_names,
    service_from_plugin,
)
from vchat.store.interface import IStore
from vchat.store.service import StoreService
from vchat.store.sqlite import open_sqlite_store
from vchat.stun.config import STUN_SETTINGS, StunConfig, stun_config
from vchat.stun.service import StunService

SETTINGS = (
    Setting(
        "ws",
        "tcp:8080",
        server_endpoint,
        "signaling listen endpoint (Twisted endpoint string): the WebSocket at /ws, the web client at /",
    ),
    Setting(
        "no-web",
        False,
        bool,
        "do not serve the web client at / (only the WebSocket at /ws)",
        flag=True,
    ),
    Setting(
        "allowed-origin",
        [],
        web_origin,
        "web origin (scheme://host[:port]) allowed to open WebSockets; others get HTTP 403 [default: any]",
        repeatable=True,
    ),
    Setting(
        "admin",
        "tcp:8081:interface=127.0.0.1",
        server_endpoint_or_none,
        "admin API and moderator page endpoint (keep it private), or none",
    ),
    Setting(
        "admin-token",
        None,
        text,
        "bearer token for the admin API, at least 16 characters; prefer VCHAT_ADMIN_TOKEN or --config "
        "[default: VCHAT_ADMIN_TOKEN, else one generated into DATA_DIR/admin-token]",
    ),
    Setting(
        "service",
        [],
        text,
        "start the service plugin NAME in this process (docs/services.md)",
        repeatable=True,
    ),
    Setting(
        "data-dir",
        "./vchat-data",
        text,
        "directory for bans, reports and moderation records (vchat.sqlite3), created with mode 0700",
    ),
    Setting(
        "redis",
        None,
        redis_url,
        "join the cluster whose Redis is at URL (redis://[[user]:password@]host[:port][/db], rediss:// for TLS,"
        " redis-sentinel://sentinel[:port][,...]/service[/db] through Sentinel):"
        " shared store, matching across nodes (docs/cluster.md) [default: a single node, store in DATA_DIR]",
    ),
    Setting(
        "node-id",
        None,
        check_node_id,
        "this node's id in the cluster: 1 to 64 printable ASCII characters, no spaces [default: random]",
    ),
    Setting(
        "report-retention",
        2592000.0,
        number,
        "seconds an open report keeps its snapshot (30 days); a dismissed one loses it at once",
        0,
    ),
    Setting(
        "max-message-bytes",
        65536,
        integer,
        "largest WebSocket message accepted; larger ones close with 1009",
        128,
    ),
    Setting(
        "max-report-bytes",
        409600,
        integer,
        "largest report message accepted (with its snapshot); larger ones close with 1009",
        128,
    ),
    Setting(
        "max-backlog-bytes",
        1048576,
        integer,
        "bytes a client may fall behind in reading before it counts as lost (it may resume)",
        65536,
    ),
    Setting(
        "max-connections-per-ip",
        50,
        integer,
        "WebSocket connections one address (IPv6: one /64) may hold; more get HTTP 429; 0: no limit",
        0,
    ),
    Setting("message-rate", 20.0, number, "messages per second a connection may send on average", 0.1),
    Setting("message-burst", 60, integer, "messages a connection may send in a burst", 1),
    Setting(
        "max-bad-messages", 10, integer, "bad messages per minute before a connection is closed with 4008", 1
    ),
    Setting(
        "hello-timeout", 10.0, number, "seconds a new connection has to open the WebSocket and send hello", 1
    ),
    Setting("heartbeat", 25.0, number, "seconds between WebSocket pings to each client", 1),
    Setting(
        "heartbeat-timeout",
        10.0,
        number,
        "seconds to wait for a pong before the connection counts as lost",
        1,
    ),
    Setting(
        "resume-grace", 15.0, number, "seconds a session lost without a close frame waits to be resumed", 0
    ),
    Setting("recent-partners", 10, integer, "how many past partners are not matched again soon", 1),
    Setting("recent-window", 600.0, number, "seconds a past partner is not matched again", 1),
    Setting(
        "rematch-after", 30.0, number, "seconds of waiting after which past partners are acceptable again", 1
    ),
    Setting(
        "geoip-db",
        None,
        text,
        "MaxMind-format country database (GeoLite2-Country, DB-IP lite) [default: countries unknown]",
    ),
    Setting(
        "trusted-proxy",
        [],
        proxy_network,
        "address or network of a reverse proxy whose X-Forwarded-For header is believed",
        repeatable=True,
    ),
    Setting(
        "public-host", None, text, "host name or address for ICE URLs [default: the host each client reached]"
    ),
    Setting(
        "stun-url",
        [],
        stun_url,
        "STUN URL for clients besides the built-in responder's, e.g. stun:stun.example.org:3478 (for a process"
        " that runs none: --stun-udp 0)",
        repeatable=True,
    ),
    Setting(
        "turn-url", [], turn_url, "TURN URL for clients, e.g. turn:turn.example.org:3478", repeatable=True
    ),
    Setting(
        "turn-secret",
        None,
        text,
        "coturn's static-auth-secret, to issue TURN credentials (keep it in --config) [default: no TURN]",
    ),
    Setting("turn-ttl", 86400.0, number, "seconds TURN credentials stay valid", 60),
    Setting(
        "ice-relay-only",
        False,
        bool,
        "tell clients to relay through TURN only, hiding their addresses",
        flag=True,
    ),
)


class Options(SettingsOptions):
    """Options of `twistd vchat`; `--config FILE` supplies the same keys and the command line wins."""

    settings = SETTINGS + STUN_SETTINGS + WEBHOOK_SETTINGS + ACCOUNT_SETTINGS
    tables = ("rules",)  # [rules.NAME]: each automatic moderation rule's thresholds (docs/moderation.md)

    def check(self) -> None:
        self.stun: StunConfig = stun_config(self)
        try:
            self.rules: list[IModerationRule] = load_rules(self.config_tables.get("rules", {}))
        except ValueError as e:
            where = f"config file {self['config']}" if self["config"] else "moderation rules"
            raise usage.UsageError(f"{where}: {e}") from None
        if self["turn-url"] and not self["turn-secret"]:
            raise usage.UsageError("--turn-url needs --turn-secret to issue TURN credentials")
        if self["max-report-bytes"] < self["max-message-bytes"]:
            raise usage.UsageError("--max-report-bytes must be at least --max-message-bytes")
        check_webhook_options(self)
        check_account_options(self)
        if self["admin-token"] is not None:
            try:
                check_token(self["admin-token"], "--admin-token")
            except ValueError as e:
                raise usage.UsageError(str(e)) from None  # the message never shows the token
        try:
            check_plugin_names(self["service"])
        except ValueError as e:
            raise usage.UsageError(f"--service: {e}") from None

    def ice_policy(self) -> IcePolicy:
        """What `welcome` tells clients about ICE servers."""
        return IcePolicy(
            stun_ports=(self.stun.udp_port,) if self.stun.udp_port else (),
            stun_urls=tuple(self["stun-url"]),
            public_host=self["public-host"],
            turn_urls=tuple(self["turn-url"]),
            turn_secret=self["turn-secret"],
            turn_ttl=self["turn-ttl"],
            relay_only=self["ice-relay-only"],
        )

    def limits(self) -> ConnectionLimits:
        """The per-connection limits these options describe."""
        return ConnectionLimits(
            max_message_bytes=self["max-message-bytes"],
            max_report_bytes=self["max-report-bytes"],
            message_rate=self["message-rate"],
            message_burst=self["message-burst"],
            max_bad_messages=self["max-bad-messages"],
            hello_timeout=self["hello-timeout"],
            heartbeat_interval=self["heartbeat"],
            heartbeat_timeout=self["heartbeat-timeout"],
            max_backlog_bytes=self["max-backlog-bytes"],
            max_connections_per_address=self["max-connections-per-ip"],
        )


def _open_redis_store(reactor: IServerReactor, url: str) -> Deferred[IStore]:
    # Imported when used: txredisapi installs the default reactor when imported.
    from vchat.store.redis import open_redis_store

    return open_redis_store(reactor, url)


def makeService(options: Options, reactor: IServerReactor | None = None) -> MultiService:
    """Wire the service tree; everything asynchronous happens when the services start."""
    under_twistd = reactor is None  # twistd's ServiceMaker passes none
    if reactor is None:
        reactor = installed_reactor()
    engine = MatchingEngine(
        recent_partners=options["recent-partners"],
        recent_seconds=options["recent-window"],
        rematch_after=options["rematch-after"],
    )
    switchboard = Switchboard(reactor, engine, resume_grace=options["resume-grace"], ice=options.ice_policy())
    # A service that cannot start stops the process only at start (with exit status 1 under twistd).
    root = ServiceTree(StartupGuard(reactor, exit_status=under_twistd))
    OpenFilesLimitService().setServiceParent(root)
    stop = root.guard.failed
    redis = options["redis"]
    store = StoreService(
        partial(_open_redis_store, reactor, redis)
        if redis
        else partial(open_sqlite_store, reactor, options["data-dir"]),
        reactor,
        on_failure=stop,
        report_retention=options["report-retention"],
    )
    store.setServiceParent(root)
    moderation = ModerationService(store, switchboard, reactor, on_failure=stop, rules=options.rules)
    moderation.setServiceParent(root)
    cluster = None
    if redis:
        from vchat.cluster.node import cluster_node

        cluster = cluster_node(
            parse_redis_url(redis),
            reactor,
            switchboard,
            moderation,
            stop,
            options["node-id"],
            options["recent-partners"],
            options["recent-window"],
            options["rematch-after"],
            describe_session=session_view,
        )
        cluster.setServiceParent(root)
    webhook = webhook_service(options, reactor, moderation)
    if webhook is not None:
        moderation.webhook = webhook
        webhook.setServiceParent(root)  # after moderation, so that it stops first
    countries: ICountryLookup = NoCountries()
    if options["geoip-db"]:
        geoip = GeoIPService(options["geoip-db"], reactor, on_failure=stop)
        geoip.setServiceParent(root)
        countries = geoip
    factory = SignalingFactory(
        switchboard,
        options.limits(),
        reactor,
        countries,
        tuple(options["trusted-proxy"]),
        bans=moderation,
        reports=moderation,
        allowed_origins=frozenset(options["allowed-origin"]),
    )
    endpoint = serverFromString(reactor, options["ws"])
    end_account = switchboard.end_account if cluster is None else cluster.end_account
    accounts = account_routes(options, reactor, store.whenOpen, end_account)
    routes = {} if accounts is None else accounts[1]
    factory.accounts = None if accounts is None else accounts[0]
    factory.require_login = options["require-login"]
    SignalingService(
        endpoint, factory, on_failure=stop, web=not options["no-web"], routes=routes
    ).setServiceParent(root)
    if options.stun.udp_port or options.stun.tcp_endpoint:
        StunService(reactor, options.stun, on_failure=stop).setServiceParent(root)
    context = ServiceContext(reactor, options["data-dir"], moderation)
    for name in options["service"]:
        root.add_plugin(service_from_plugin(name, context))
    if options["admin"] is not None:
        stun = root.namedServices.get("stun")
        sources = None
        if cluster is not None:
            assert cluster.presence is not None and cluster.bus is not None
            sources = ClusterSources(cluster.presence, cluster.bus)
        figures = Figures(switchboard, engine, moderation, lambda: stun, webhook, cluster=sources)
        control = ServiceControl(root)
        api = AdminApi(
            moderation,
            store,
            switchboard,
            figures,
            control,
            reactor,
            options["deletion-grace"],
            end_account,
            None if cluster is None else cluster.find_session,
        )
        token = partial(admin_token, options["admin-token"], os.environ, options["data-dir"])
        admin = AdminService(
            serverFromString(reactor, options["admin"]), api.routes(), token, on_failure=stop
        )
        admin.setServiceParent(root)
    return root

"""The admin API's routes (docs/admin.md, docs/admin-openapi.yaml): health, metrics, stats, reports, bans, flags,
sessions and services. Each handler checks its input, asks the moderation service, the store, the switchboard or
the service control, and says what happened in JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from vchat.admin.figures import Figures
from vchat.admin.metrics import metrics_registry, render_metrics
from vchat.admin.views import account_view, ban_view, flag_view, report_view, session_view
from vchat.jsonapi import (
    ApiError,
    Call,
    Reply,
    Route,
    bad_request,
    json_reply,
    not_found,
    number_field,
    text_field,
)
from vchat.moderation.service import ModerationService, Resolution
from vchat.protocol.switchboard import Switchboard
from vchat.services import NotStoppable, ServiceControl, ServiceFailed, ServiceInfo, UnknownService
from vchat.store.interface import AlreadyResolved, IStore
from vchat.store.records import CATEGORIES, TARGET_KINDS, Category, Report, Snapshot
from vchat.store.service import StoreService

DEFAULT_DELETION_GRACE = 30 * 86400.0
"""Seconds from an account's deletion to its purge: 30 days, as the services promise."""

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_RESOLVED: tuple[Any, ...] = ("dismissed", "banned")


def _image(snapshot: Snapshot | None, what: str) -> Reply:
    if snapshot is None:
        raise not_found(f"{what} snapshot")
    return Reply(snapshot.data, snapshot.content_type, cache="private, no-store")


def _category(body: dict[str, Any]) -> Category:
    value = body.get("category", "other")
    if value not in CATEGORIES:
        raise bad_request(f"category must be one of {', '.join(CATEGORIES)}")
    category: Category = value
    return category


def _action(body: dict[str, Any], default: Resolution | None) -> Resolution:
    action = body.get("action", default)
    if action == "ban":
        return "ban"
    if action == "dismiss":
        return "dismiss"
    raise bad_request("action must be 'ban' or 'dismiss'")


def _service_view(info: ServiceInfo) -> dict[str, Any]:
    return {"name": info.name, "running": info.running, "stoppable": info.stoppable, "kind": info.kind}


class AdminApi:
    """The route handlers, over the process's services."""

    def __init__(
        self,
        moderation: ModerationService,
        store: StoreService,
        switchboard: Switchboard,
        figures: Figures,
        control: ServiceControl,
        clock: IReactorTime,
        deletion_grace: float = DEFAULT_DELETION_GRACE,
        end_account: Callable[[str], object] | None = None,
        find_elsewhere: Callable[[str, bool], Deferred[dict[str, Any] | None]] | None = None,
    ) -> None:
        """`deletion_grace`: seconds from a deletion request to the account's purge; `end_account(id)` ends a
        deleted account's sessions (default: on this node, through the switchboard; in a cluster, on every
        node); `find_elsewhere(id, kick)` gives a session of another node of a cluster as `session_view`
        shows it (kicked, if `kick`), or None if none has it."""
        self._moderation = moderation
        self._store = store
        self._switchboard = switchboard
        self._figures = figures
        self._registry = metrics_registry(figures)
        self._control = control
        self._clock = clock
        self._deletion_grace = deletion_grace
        self._end_account = end_account or switchboard.end_account
        self._find_elsewhere = find_elsewhere

    def routes(self) -> list[Route]:
        """Every route of the API (the page's static files are added by the admin service)."""
        return [
            Route("GET", "/healthz", self.healthz, public=True),
            Route("GET", "/metrics", self.metrics),
            Route("GET", "/api/stats", self.stats),
            Route("GET", "/api/reports", self.list_reports),
            Route("GET", "/api/reports/{id}", self.get_report),
            Route("GET", "/api/reports/{id}/snapshot", self.report_snapshot),
            Route("POST", "/api/reports/{id}/resolve", self.resolve_report),
            Route("GET", "/api/bans", self.list_bans),
            Route("POST", "/api/bans", self.add_ban),
            Route("GET", "/api/bans/{id}", self.get_ban),
            Route("DELETE", "/api/bans/{id}", self.lift_ban),
            Route("GET", "/api/bans/{id}/snapshot", self.ban_snapshot),
            Route("GET", "/api/flags", self.list_flags),
            Route("POST", "/api/flags/{id}/resolve", self.resolve_flag),
            Route("GET", "/api/sessions/{id}", self.get_session),
            Route("POST", "/api/sessions/{id}/kick", self.kick_session),
            Route("GET", "/api/accounts/{id}", self.get_account),
            Route("POST", "/api/accounts/{id}/delete", self.delete_account),
            Route("GET", "/api/services", self.list_services),
            Route("POST", "/api/services/{name}/stop", self.stop_service),
            Route("POST", "/api/services/{name}/start", self.start_service),
        ]

    async def _opened(self) -> IStore:
        store: IStore = await self._store.whenOpen()
        return store

    # --- process ------------------------------------------------------------------------------------

    def healthz(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        return {"status": "ok"}

    def metrics(self, call: Call) -> Reply:
        call.reject_query()
        body, content_type = render_metrics(self._registry)
        return Reply(body, content_type)

    def stats(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        return dict(self._figures.stats())

    # --- reports ------------------------------------------------------------------------------------

    async def list_reports(self, call: Call) -> dict[str, Any]:
        call.reject_query(("status", "limit"))
        status = call.query_value("status", ("open", "resolved"), "open")
        limit = call.query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        store = await self._opened()
        if status == "open":
            reports = await store.list_reports("open", limit)
        else:
            reports = [report for each in _RESOLVED for report in await store.list_reports(each, limit)]
            reports.sort(key=lambda report: report.created_at)  # the oldest of both, as the store lists them
        return {"items": [report_view(report) for report in reports[:limit]]}

    async def _report(self, report_id: str) -> Report:
        report = await (await self._opened()).get_report(report_id)
        if report is None:
            raise not_found("report")
        return report

    async def get_report(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        return report_view(await self._report(call.params["id"]))

    async def report_snapshot(self, call: Call) -> Reply:
        call.reject_query()
        await self._report(call.params["id"])
        return _image(await (await self._opened()).report_snapshot(call.params["id"]), "report")

    async def resolve_report(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        body = call.json(("action", "duration_s", "reason"))
        action = _action(body, None)
        duration, reason = number_field(body, "duration_s"), text_field(body, "reason")
        try:
            report = await self._moderation.resolve_report(call.params["id"], action, duration, reason)
        except AlreadyResolved as e:
            raise ApiError(409, "already_resolved", str(e)) from None
        except ValueError as e:
            raise bad_request(str(e)) from None
        if report is None:
            raise not_found("report")
        return report_view(report)

    # --- bans ---------------------------------------------------------------------------------------

    async def list_bans(self, call: Call) -> dict[str, Any]:
        call.reject_query(("status", "limit"))
        active = call.query_value("status", ("active", "ended"), "active") == "active"
        limit = call.query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        now = self._clock.seconds()
        bans = await (await self._opened()).list_bans(active, now, limit)
        return {"items": [ban_view(ban, now) for ban in bans]}

    async def add_ban(self, call: Call) -> Reply:
        call.reject_query()
        body = call.json((*TARGET_KINDS, "reason", "duration_s", "category"))
        targets = [kind for kind in TARGET_KINDS if body.get(kind) is not None]
        if len(targets) != 1:
            raise bad_request(f"name exactly one of {', '.join(TARGET_KINDS)}")
        kind = targets[0]
        value = text_field(body, kind, required=True)
        reason = text_field(body, "reason", required=True)
        assert value is not None and reason is not None
        try:
            ban = await self._moderation.ban(
                kind, value, reason, _category(body), number_field(body, "duration_s")
            )
        except ValueError as e:
            raise bad_request(str(e)) from None
        return json_reply(ban_view(ban, self._clock.seconds()), 201)

    async def get_ban(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        ban = await (await self._opened()).get_ban(call.params["id"])
        if ban is None:
            raise not_found("ban")
        return ban_view(ban, self._clock.seconds())

    async def lift_ban(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        ban = await self._moderation.lift(call.params["id"])
        if ban is None:
            raise not_found("ban")
        return ban_view(ban, self._clock.seconds())

    async def ban_snapshot(self, call: Call) -> Reply:
        call.reject_query()
        await self.get_ban(call)
        return _image(await (await self._opened()).ban_snapshot(call.params["id"]), "ban")

    # --- flags --------------------------------------------------------------------------------------

    async def list_flags(self, call: Call) -> dict[str, Any]:
        call.reject_query(("status", "limit"))
        status = call.query_value("status", ("open", "resolved"), "open")
        limit = call.query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        flags = await (await self._opened()).list_flags("open" if status == "open" else "resolved", limit)
        return {"items": [flag_view(flag) for flag in flags]}

    async def resolve_flag(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        body = call.json(("action", "duration_s", "reason", "category"))
        action = _action(body, "dismiss")
        duration, reason = number_field(body, "duration_s"), text_field(body, "reason")
        try:
            flag = await self._moderation.resolve_flag(
                call.params["id"],
                action,
                duration,
                reason,
                _category(body),
            )
        except AlreadyResolved as e:
            raise ApiError(409, "already_resolved", str(e)) from None
        except ValueError as e:
            raise bad_request(str(e)) from None
        if flag is None:
            raise not_found("flag")
        return flag_view(flag)

    # --- sessions -----------------------------------------------------------------------------------

    async def get_session(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        session_id = call.params["id"]
        session = self._switchboard.find(session_id)
        if session is not None:
            return session_view(session, self._switchboard.node_id)
        return await self._elsewhere(session_id, kick=False)

    async def kick_session(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        call.json(())
        session_id = call.params["id"]
        if not self._switchboard.kick(session_id):
            await self._elsewhere(session_id, kick=True)
        return {"kicked": True}

    async def _elsewhere(self, session_id: str, kick: bool) -> dict[str, Any]:
        """Session `session_id` of another node (kicked, if `kick`); 404 if no node has it."""
        found: dict[str, Any] | None = None
        if self._find_elsewhere is not None:
            found = await self._find_elsewhere(session_id, kick)
        if found is None:
            raise not_found("session")
        return found

    # --- accounts -----------------------------------------------------------------------------------

    async def get_account(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        store = await self._store.whenOpen()
        account = await store.get_account(call.params["id"])
        if account is None:
            raise not_found("account")
        return account_view(account)

    async def delete_account(self, call: Call) -> dict[str, Any]:
        """Deletion on the user's request (as the services' deletion forms take it): inaccessible at once,
        purged after the grace period; a second request changes nothing."""
        call.reject_query()
        call.json(())
        store = await self._store.whenOpen()
        now = self._clock.seconds()
        account = await store.delete_account(call.params["id"], now, now + self._deletion_grace)
        if account is None:
            raise not_found("account")
        self._end_account(account.account_id)
        return account_view(account)

    # --- services -----------------------------------------------------------------------------------

    def list_services(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        return {"items": [_service_view(info) for info in self._control.services()]}

    async def stop_service(self, call: Call) -> dict[str, Any]:
        return await self._switch(call, self._control.stop)

    async def start_service(self, call: Call) -> dict[str, Any]:
        return await self._switch(call, self._control.start)

    async def _switch(self, call: Call, switch: Callable[[str], Any]) -> dict[str, Any]:
        call.reject_query()
        call.json(())
        try:
            info: ServiceInfo = await switch(call.params["name"])
        except UnknownService:
            raise not_found("service") from None
        except NotStoppable as e:
            raise ApiError(409, "not_stoppable", str(e)) from None
        except ServiceFailed as e:
            raise ApiError(409, "service_failed", str(e)) from None
        return _service_view(info)

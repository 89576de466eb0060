"""A logged-in user's own routes, on the signaling endpoint (same origin as the web page; docs/accounts.md):

    GET    /api/me            the account: id, providers, gender, country, settings, when it was made, and how
                              long after a deletion it is purged (deletion_grace_s)
    PATCH  /api/me/settings   change some settings (JSON: lang, translate_to, translate, want, countries)
    DELETE /api/me            delete the account, with {"confirm": true}: inaccessible at once, purged later
    GET    /api/me/export     everything stored about the user: the account, the bans on it, the reports it made

Each needs the login cookie (401 `login_required` without one). A request that changes something must come from
the site's own pages: its Origin must be the site (403 otherwise), so that another site cannot make a logged-in
browser change or delete its account. Errors are JSON, as the admin API's (vchat.jsonapi).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from vchat.accounts.cookie import COOKIE_NAME
from vchat.accounts.flow import Logins
from vchat.accounts.routes import same_origin
from vchat.jsonapi import ApiError, Call, JsonApi, Route, Router, bad_request
from vchat.store.account_records import Account, AccountSettings
from vchat.store.interface import IStore
from vchat.store.records import Ban, Report

ME_PREFIX = b"/api/me"
MAX_EXPORTED_REPORTS = 10000
_SETTINGS = ("lang", "translate_to", "translate", "want", "countries")


def _same_site(request: Request, route: Route) -> None:
    """`jsonapi.Guard`: a request that changes something must come from the site's own pages."""
    if route.method != "GET" and not same_origin(request):
        raise ApiError(403, "forbidden", "change your account from this site's own page")


def _account_view(account: Account) -> dict[str, Any]:
    return {
        "id": account.account_id,
        "providers": sorted({identity.provider for identity in account.identities}),
        "gender": account.gender,
        "country": account.country,
        "settings": account.settings.as_json(),
        "created_at": account.created_at,
    }


def _ban_view(ban: Ban) -> dict[str, Any]:
    return {
        "category": ban.category,
        "reason": ban.reason,
        "created_at": ban.created_at,
        "ends_at": ban.ends_at,
        "ended_at": ban.ended_at,
    }


def _report_view(report: Report) -> dict[str, Any]:
    """A report the user made, without the reported user's data: it is not theirs."""
    return {
        "id": report.id,
        "created_at": report.created_at,
        "reason": report.reason,
        "comment": report.comment,
        "status": report.status,
    }


class OwnRoutes:
    """The handlers of a user's own routes (see the module)."""

    def __init__(
        self,
        logins: Logins,
        store: Callable[[], Deferred[IStore]],
        end_sessions: Callable[[str], object],
        clock: IReactorTime,
        deletion_grace: float,
    ) -> None:
        """`end_sessions(account_id)` ends the deleted account's live sessions."""
        self._logins = logins
        self._store = store
        self._end_sessions = end_sessions
        self._clock = clock
        self._grace = deletion_grace

    def resource(self) -> JsonApi:
        """The routes as one twisted.web resource, for `ME_PREFIX`."""
        return JsonApi(
            Router(
                [
                    Route("GET", "/api/me", self.get),
                    Route("DELETE", "/api/me", self.delete),
                    Route("PATCH", "/api/me/settings", self.patch_settings),
                    Route("GET", "/api/me/export", self.export),
                ]
            ),
            _same_site,
        )

    async def _account(self, call: Call) -> Account:
        account = await self._logins.account(call.cookie(COOKIE_NAME))
        if account is None:
            raise ApiError(401, "login_required", "log in first")
        return account

    async def get(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        # How long after a deletion the account is purged, for the page's confirmation to say.
        return {**_account_view(await self._account(call)), "deletion_grace_s": self._grace}

    async def patch_settings(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        changes = call.json(_SETTINGS)
        account = await self._account(call)
        fields = {**account.settings.as_json(), **changes}
        try:
            countries = fields["countries"]
            if not isinstance(countries, list):
                raise ValueError("countries is a list of ISO 3166 alpha-2 codes")
            fields["countries"] = tuple(sorted({str(code).upper() for code in countries}))
            settings = AccountSettings(**fields)
        except (ValueError, TypeError) as e:
            raise bad_request(str(e)) from None
        store = await self._store()
        updated = await store.update_settings(account.account_id, settings)
        if updated is None:  # deleted meanwhile
            raise ApiError(401, "login_required", "log in first")
        return {"settings": updated.settings.as_json()}

    async def delete(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        body = call.json(("confirm",))
        if body.get("confirm") is not True:
            raise bad_request('send {"confirm": true}: deleting the account cannot be undone')
        account = await self._account(call)
        store = await self._store()
        now = self._clock.seconds()
        deleted = await store.delete_account(account.account_id, now, now + self._grace)
        assert deleted is not None and deleted.purge_at is not None
        self._end_sessions(account.account_id)
        if call.request is not None:
            call.request.addCookie(COOKIE_NAME, "", max_age="0", path="/", httpOnly=True, sameSite="lax")
        return {"deleted": True, "purge_at": deleted.purge_at}

    async def export(self, call: Call) -> dict[str, Any]:
        call.reject_query()
        account = await self._account(call)
        store = await self._store()
        bans = await store.bans_on_user(account.account_id)
        reports = await store.reports_by(account.account_id, MAX_EXPORTED_REPORTS)
        return {
            "account": {**_account_view(account), "last_login_at": account.last_login_at},
            "bans": [_ban_view(ban) for ban in bans],
            "reports_made": [_report_view(report) for report in reports],
            "kept_elsewhere": (
                "nothing: an e-mail address is kept only as a keyed hash (to link your logins), your birth date "
                "and your providers' tokens are never kept, and your chats are never stored"
            ),
        }

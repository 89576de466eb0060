"""What the admin API shows of each record: plain JSON values (docs/admin-openapi.yaml), ids as strings."""

from __future__ import annotations

from typing import Any

from vchat.protocol.session import Session
from vchat.store.account_records import Account
from vchat.store.records import Ban, Flag, Report


def ban_view(ban: Ban, now: float) -> dict[str, Any]:
    """A ban; `active` at `now`. A chat-abuse ban shows the offender's own last messages (its evidence)."""
    return {
        "id": ban.id,
        "target": {"kind": ban.target.kind, "value": ban.target.value},
        "category": ban.category,
        "reason": ban.reason,
        "source": ban.source,
        "created_at": ban.created_at,
        "ends_at": ban.ends_at,
        "ended_at": ban.ended_at,
        "active": ban.active_at(now),
        "report_id": ban.report_id,
        "has_snapshot": ban.has_snapshot,
        "messages": list(ban.messages),
    }


def report_view(report: Report) -> dict[str, Any]:
    """A report: who reported whom (ids only), the reported user's address and client facts, why, and status."""
    return {
        "id": report.id,
        "status": report.status,
        "reason": report.reason,
        "comment": report.comment,
        "created_at": report.created_at,
        "resolved_at": report.resolved_at,
        "ban_id": report.ban_id,
        "has_snapshot": report.has_snapshot,
        "reporter": {"user_id": report.reporter_user_id, "device_id": report.reporter_device_id},
        "reported": {
            "user_id": report.reported_user_id,
            "device_id": report.reported_device_id,
            "ip": report.reported_ip,
            "client": dict(report.reported_client),
        },
    }


def flag_view(flag: Flag) -> dict[str, Any]:
    """An automatic rule's flag and the figures it gave."""
    return {
        "id": flag.id,
        "status": flag.status,
        "rule": flag.rule,
        "user_id": flag.user_id,
        "device_id": flag.device_id,
        "summary": dict(flag.summary),
        "created_at": flag.created_at,
        "resolved_at": flag.resolved_at,
    }


def session_view(session: Session, node: str | None) -> dict[str, Any]:
    """A live session of node `node` (None: a single node) as a moderator may see it: never its partner, its
    match or its messages."""
    return {
        "id": session.session_id,
        "node": node,
        "user_id": session.user_id,
        "account": None if session.account is None else session.account.user_id,
        "state": session.state.value,
        "connected": session.peer is not None,
        "country": session.country,
        "gender": session.gender,
        "lang": session.lang,
        "device_id": session.device_id,
        "ip": session.address,
        "client": dict(session.client),
        "connected_since": session.started_at,
    }


def account_view(account: Account) -> dict[str, Any]:
    """An account as a moderator may see it: never an e-mail (only whether a hash links it), a birth date or a
    provider token, which are not kept."""
    return {
        "id": account.account_id,
        "providers": [
            {"provider": identity.provider, "subject": identity.subject} for identity in account.identities
        ],
        "gender": account.gender,
        "country": account.country,
        "has_email": account.has_email,
        "settings": account.settings.as_json(),
        "created_at": account.created_at,
        "last_login_at": account.last_login_at,
        "deleted_at": account.deleted_at,
        "purge_at": account.purge_at,
    }

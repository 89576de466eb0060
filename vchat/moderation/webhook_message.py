"""What the moderation webhook sends and understands: signed JSON payloads for reports and flags, and the
verdict a reply may carry (docs/webhook.md).

Pure Python: no Twisted, no clock. Times are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from vchat.store.records import CATEGORIES, MAX_REASON_CHARS, Category, Flag, Report, Snapshot

TIMESTAMP_HEADER = "X-Vchat-Timestamp"
SIGNATURE_HEADER = "X-Vchat-Signature"
MAX_VERDICT_BYTES = 64 * 1024
"""The largest reply read for a verdict; a longer one is cut off and ignored."""
REPLAY_WINDOW_S = 300.0
"""How far a receiver following docs/webhook.md lets a timestamp stray from its own clock."""

ItemKind = Literal["report", "flag"]
Action = Literal["ban", "none"]


@dataclass(frozen=True)
class Subject:
    """What a webhook item is about: a report or a flag, by id."""

    kind: ItemKind
    id: str


@dataclass(frozen=True)
class Verdict:
    """A webhook's decision on an item: "none", or "ban" for `duration_s` seconds (None: for good).

    `reason` is shown to the banned user (None: vchat's default); `category` is used for flags only (a report's
    ban takes the report's reason as its category).
    """

    action: Action
    duration_s: float | None = None
    reason: str | None = None
    category: Category | None = None


class VerdictError(ValueError):
    """A reply vchat does not understand as a verdict; the message says why (never the reply itself)."""


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The `X-Vchat-Signature` value for `body` sent at `timestamp` (Unix seconds): `sha256=<hex>` of
    HMAC-SHA256(secret, "<timestamp>." + body)."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(
    secret: str | bytes,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    window_s: float = REPLAY_WINDOW_S,
) -> bool:
    """Whether `signature` signs `body` at `timestamp` (the two headers, as received) with `secret`, and the
    timestamp is within `window_s` seconds of `now`; the signatures are compared in constant time."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > window_s:
        return False
    expected = sign(secret, int(timestamp), body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def headers_for(secret: str | bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """The HTTP headers of one delivery attempt of `body` at `timestamp`."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def report_payload(report: Report, snapshot: Snapshot | None) -> bytes:
    """The JSON body POSTed for a new report: its id, reason, time, the reporter's and reported user's ids
    (and the reported address), and the snapshot in base64. Not the comment or client facts."""
    return _encode(
        {
            "kind": "report",
            "report_id": report.id,
            "reason": report.reason,
            "time": report.created_at,
            "reported": {
                "user_id": report.reported_user_id,
                "device_id": report.reported_device_id,
                "ip": report.reported_ip,
            },
            "reporter": {"user_id": report.reporter_user_id, "device_id": report.reporter_device_id},
            "snapshot": None if snapshot is None else base64.b64encode(snapshot.data).decode("ascii"),
            "snapshot_type": None if snapshot is None else snapshot.content_type,
        }
    )


def flag_payload(flag: Flag) -> bytes:
    """The JSON body POSTed for an automatic rule's flag: its id, the rule (as `reason`), its summary of
    figures, time, and the flagged user's ids."""
    return _encode(
        {
            "kind": "flag",
            "flag_id": flag.id,
            "reason": flag.rule,
            "summary": dict(flag.summary),
            "time": flag.created_at,
            "reported": {"user_id": flag.user_id, "device_id": flag.device_id},
            "snapshot": None,
            "snapshot_type": None,
        }
    )


def report_subject(report: Report) -> Subject:
    """The subject of a report's delivery."""
    return Subject("report", report.id)


def flag_subject(flag: Flag) -> Subject:
    """The subject of a flag's delivery."""
    return Subject("flag", flag.id)


def parse_verdict(body: bytes) -> Verdict | None:
    """The verdict in a 2xx reply's body: None for an empty body (no verdict); `VerdictError` saying why for
    anything else vchat does not understand. Keys other than those of docs/webhook.md are ignored."""
    if not body.strip():
        return None
    if len(body) > MAX_VERDICT_BYTES:
        raise VerdictError(f"the reply is longer than {MAX_VERDICT_BYTES} bytes")
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise VerdictError("the reply is not JSON") from None
    if not isinstance(value, dict):
        raise VerdictError("the reply is not a JSON object")
    action = value.get("action")
    if action == "none":
        return Verdict("none")
    if action != "ban":
        raise VerdictError('"action" must be "ban" or "none"')
    if "duration_s" not in value:
        raise VerdictError('a ban needs "duration_s": seconds, or null for a permanent ban')
    duration = value["duration_s"]
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or duration <= 0
    ):
        raise VerdictError('"duration_s" must be a positive number of seconds, or null')
    reason = value.get("reason")
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_CHARS):
        raise VerdictError(f'"reason" must be a string of 1 to {MAX_REASON_CHARS} characters')
    category = value.get("category")
    if category is not None and category not in CATEGORIES:
        raise VerdictError(f'"category" must be one of {", ".join(CATEGORIES)}')
    return Verdict("ban", None if duration is None else float(duration), reason, category)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def retryable(status: int) -> bool:
    """Whether a delivery answered with HTTP `status` (not 2xx) is tried again: 408, 429 and 5xx are; the
    rest (other 4xx, redirects) mean the webhook refuses it, and it is dropped."""
    return status in (408, 429) or 500 <= status <= 599


def webhook_url(value: Any) -> str:
    """An `http://` or `https://` URL with a host, for `--moderation-webhook`; `ValueError` otherwise."""
    if not isinstance(value, str) or not value or not value.isascii() or any(c.isspace() for c in value):
        raise ValueError("expected an http:// or https:// URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # a bad port raises ValueError here
    except ValueError:
        raise ValueError("expected an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value

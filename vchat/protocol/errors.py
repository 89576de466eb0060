"""The one error type that protocol handlers raise, and the wire codes it carries."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes sent in `error` messages (see docs/protocol.md)."""

    HELLO_REQUIRED = "hello_required"
    AGE_REQUIRED = "age_required"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    NO_MATCH = "no_match"
    IN_MATCH = "in_match"
    TOO_LONG = "too_long"
    RATE_LIMITED = "rate_limited"
    PARTNER_RECONNECTING = "partner_reconnecting"
    BAD_SNAPSHOT = "bad_snapshot"
    KICKED = "kicked"
    LOGIN_REQUIRED = "login_required"
    ACCOUNT_DELETED = "account_deleted"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    SHUTTING_DOWN = 4000
    TOO_BIG = 1009
    HELLO_REQUIRED = 4001
    AGE_REQUIRED = 4002
    REPLACED = 4003
    BANNED = 4004
    KICKED = 4005
    TOO_MANY_ERRORS = 4008
    LOGIN_REQUIRED = 4009
    ACCOUNT_DELETED = 4010


class ProtocolError(Exception):
    """A client mistake: becomes one `error` message, and closes the connection when `close` is set."""

    def __init__(self, code: ErrorCode, message: str, close: CloseCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close

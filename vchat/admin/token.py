"""Where the admin token comes from: `--admin-token`, else VCHAT_ADMIN_TOKEN, else a file in the data directory.

A generated token is written once to `DATA_DIR/admin-token` (mode 0600) and read from there at every later
start, so that a moderator's saved token keeps working across restarts. The token itself is never logged.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from twisted.web.server import Request

from vchat.jsonapi import ApiError, Route

ENVIRONMENT_VARIABLE = "VCHAT_ADMIN_TOKEN"
TOKEN_FILE = "admin-token"
MIN_TOKEN_CHARS = 16


class TokenError(Exception):
    """The token cannot be had: the message says which file and what to do."""


@dataclass(frozen=True)
class AdminToken:
    """The token and where it came from (`path`: the file, for a generated or stored one)."""

    value: str = field(repr=False)
    source: Literal["option", "environment", "file"]
    path: Path | None = None


def check_token(value: str, where: str) -> str:
    """`value` if it is usable as a token; ValueError naming `where` otherwise."""
    if len(value) < MIN_TOKEN_CHARS or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(
            f"{where} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces"
        )
    return value


def admin_token(option: str | None, environ: Mapping[str, str], data_dir: str) -> AdminToken:
    """The admin token: from the option, the environment, or `data_dir`'s token file (created if missing).

    Raises TokenError when the file cannot be read or written, or holds no usable token.
    """
    if option is not None:
        return AdminToken(check_token(option, "--admin-token"), "option")
    from_environment = environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        try:
            return AdminToken(check_token(from_environment, ENVIRONMENT_VARIABLE), "environment")
        except ValueError as e:
            raise TokenError(str(e)) from None
    path = Path(data_dir) / TOKEN_FILE
    try:
        return AdminToken(_read_or_create(path), "file", path)
    except OSError as e:
        raise TokenError(f"cannot keep the admin token in {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise TokenError(f"{e}; delete the file to have a new token generated") from None


def _read_or_create(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # readable by others: not any more
        return check_token(path.read_text().strip(), str(path))
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


class BearerToken:
    """The admin token, known once the admin service has started; compared in constant time."""

    def __init__(self) -> None:
        self._token: bytes | None = None

    def set(self, token: str) -> None:
        self._token = token.encode()

    def admits(self, header: bytes | None) -> bool:
        """Whether an Authorization header carries the token."""
        token = self._token
        if token is None or header is None:
            return False
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)

    def guard(self, request: Request, route: Route) -> None:
        """`jsonapi.Guard`: routes not `public` need `Authorization: Bearer TOKEN`, else 401."""
        if not route.public and not self.admits(request.getHeader(b"authorization")):
            raise ApiError(
                401,
                "unauthorized",
                "send Authorization: Bearer TOKEN",
                [("WWW-Authenticate", 'Bearer realm="vchat"')],
            )

"""docs/protocol.md and README.md stay true to the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vchat.admin.api import AdminApi
from vchat.jsonapi import Route
from vchat.protocol.errors import CloseCode, ErrorCode
from vchat.protocol.messages import CLIENT_TYPES, parse_message
from vchat.tap import Options

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
README = (ROOT / "README.md").read_text()
STUN_GUIDE = (ROOT / "docs" / "stun-turn.md").read_text()
SERVER_TYPES = {
    "welcome", "searching", "matched", "signal", "chat", "typing", "idle", "partner_left",
    "partner_reconnecting", "partner_resumed", "pong", "error", "banned", "reported",
}  # fmt: skip


def sections() -> list[tuple[str, list[dict]]]:
    """(heading, JSON examples under it) for every level-3 heading of the protocol document."""
    found = []
    for part in re.split(r"^### ", PROTOCOL, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", body, flags=re.S)]
        found.append((heading, examples))
    return found


def test_every_example_is_json_with_a_documented_type() -> None:
    for heading, examples in sections():
        for example in examples:
            assert example["type"] in CLIENT_TYPES | SERVER_TYPES
            assert f"`{example['type']}`" in heading


@pytest.mark.parametrize("kind", sorted(CLIENT_TYPES | SERVER_TYPES))
def test_every_message_type_has_a_section_with_an_example(kind: str) -> None:
    assert any(f"`{kind}`" in heading and examples for heading, examples in sections())


def test_client_examples_validate() -> None:
    for heading, examples in sections():
        if "client → server" in heading:
            for example in examples:
                if example["type"] in CLIENT_TYPES:
                    parse_message(example)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"| `{code.value}` |" in PROTOCOL


@pytest.mark.parametrize("code", [c for c in CloseCode if c != CloseCode.NORMAL])
def test_every_close_code_is_documented(code: CloseCode) -> None:
    assert f"| {code.value} |" in PROTOCOL


@pytest.mark.parametrize("setting", Options.settings, ids=lambda s: s.name)
def test_every_option_is_in_the_readme(setting: object) -> None:
    assert f"`--{setting.name}`" in README  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "setting", [s for s in Options.settings if s.name.startswith("stun-")], ids=lambda s: s.name
)
def test_every_stun_option_is_in_the_stun_guide(setting: object) -> None:
    assert f"`--{setting.name}" in STUN_GUIDE  # type: ignore[attr-defined]


ADMIN_GUIDE = (ROOT / "docs" / "admin.md").read_text()


@pytest.mark.parametrize(
    "route", AdminApi.routes(object.__new__(AdminApi)), ids=lambda route: f"{route.method} {route.pattern}"
)
def test_every_admin_route_is_in_the_admin_guide(route: Route) -> None:
    assert re.search(rf"`{route.method} {re.escape(route.pattern)}[`?]", ADMIN_GUIDE)


@pytest.mark.parametrize(
    "code",
    sorted(
        set(
            re.findall(
                r'ApiError\(\s*\d+,\s*"(\w+)"',
                (ROOT / "vchat" / "admin" / "api.py").read_text()
                + (ROOT / "vchat" / "jsonapi.py").read_text()
                + (ROOT / "vchat" / "admin" / "token.py").read_text(),
            )
        )
    ),
)
def test_every_admin_error_code_is_in_the_admin_guide(code: str) -> None:
    assert f"`{code}`" in ADMIN_GUIDE

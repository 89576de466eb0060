"""Where the admin token comes from: the option, the environment, or a generated file kept with mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vchat.admin.token import ENVIRONMENT_VARIABLE, TOKEN_FILE, TokenError, admin_token, check_token

GOOD = "s3cret-token-0123456789"


def test_the_option_wins_over_the_environment(tmp_path: Path) -> None:
    token = admin_token(GOOD, {ENVIRONMENT_VARIABLE: "x" * 20}, str(tmp_path))
    assert (token.value, token.source, token.path) == (GOOD, "option", None)
    assert not (tmp_path / TOKEN_FILE).exists()


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    token = admin_token(None, {ENVIRONMENT_VARIABLE: GOOD}, str(tmp_path))
    assert (token.value, token.source) == (GOOD, "environment")
    with pytest.raises(TokenError, match=ENVIRONMENT_VARIABLE):
        admin_token(None, {ENVIRONMENT_VARIABLE: "short"}, str(tmp_path))


def test_a_generated_token_is_written_once_with_mode_0600_and_read_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = admin_token(None, {}, str(data_dir))
    path = data_dir / TOKEN_FILE
    assert first.source == "file" and first.path == path
    assert path.read_text() == first.value + "\n" and len(first.value) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert admin_token(None, {}, str(data_dir)).value == first.value  # kept across restarts
    assert GOOD not in repr(first) and first.value not in repr(first)


def test_a_token_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text(GOOD + "\n")
    path.chmod(0o644)
    assert admin_token(None, {}, str(tmp_path)).value == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unusable_file_or_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text("short\n")
    with pytest.raises(TokenError, match="delete the file"):
        admin_token(None, {}, str(tmp_path))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    with pytest.raises(TokenError, match="cannot keep the admin token"):
        admin_token(None, {}, str(blocked))


@pytest.mark.parametrize(
    "value", ["", "short", "x" * 15, "has a space in it!!", "ünïcode-token-123456", "tab\there-0123456789"]
)
def test_weak_or_odd_tokens_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        check_token(value, "--admin-token")

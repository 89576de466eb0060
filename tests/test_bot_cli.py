"""`vchat-bot`'s command line; running it against a server is in test_bot_integration.py."""

from __future__ import annotations

import pytest

from vchat.bot.cli import build_parser, main, settings_from


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--clients", "0"], ["--codec", "xml"], ["--dwell-min", "5", "--dwell-max", "1"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "vchat-bot" in capsys.readouterr().err


def test_cli_options_become_settings() -> None:
    args = build_parser().parse_args(["--codec", "msgpack", "--dwell-min", "1", "--dwell-max", "3"])
    assert args.codec == "msgpack" and args.url == "ws://127.0.0.1:8080/ws" and args.clients == 10
    assert args.origin is None
    assert (
        build_parser().parse_args(["--origin", "https://chat.example.org"]).origin
        == "https://chat.example.org"
    )
    settings = settings_from(args)
    assert (settings.dwell_min, settings.dwell_max, settings.search_timeout) == (1.0, 3.0, 10.0)

"""Settings from the command line and a TOML file: checked values, the command line winning, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.python.usage import UsageError

from vchat.options import (
    Setting,
    SettingsOptions,
    integer,
    ip_address,
    number,
    port,
    port_or_zero,
    server_endpoint,
    text,
)

SETTINGS = (
    Setting("name", "vchat", text, "what to call it"),
    Setting("port", 8080, port, "where to listen"),
    Setting("udp", 3478, port_or_zero, "UDP port; 0 turns it off"),
    Setting("rate", 20.0, number, "events per second", 0.1),
    Setting("burst", 60, integer, "events at once", 1),
    Setting("listen", "tcp:8080", server_endpoint, "endpoint to listen on"),
    Setting("host-name", None, text, "a host name [default: the one each client asked for]"),
    Setting("interface", [], ip_address, "an address to answer on", repeatable=True),
    Setting("loud", False, bool, "say more", flag=True),
)
NAME, PORT, UDP, RATE, BURST, LISTEN, HOST, INTERFACE, LOUD = SETTINGS


class ExampleOptions(SettingsOptions):
    """Options made of `SETTINGS`, with a check across them."""

    settings = SETTINGS

    def check(self) -> None:
        if self["loud"] and self["host-name"] is None:
            raise UsageError("--loud needs --host-name")


def parse(*args: str) -> ExampleOptions:
    options = ExampleOptions()
    options.parseOptions(list(args))
    return options


def config_file(tmp_path: Path, toml: str) -> str:
    """The path of a TOML file holding `toml`."""
    path = tmp_path / "example.toml"
    path.write_text(toml)
    return str(path)


def test_defaults() -> None:
    options = parse()
    assert {s.name: options[s.name] for s in SETTINGS} == {s.name: s.default for s in SETTINGS}


def test_command_line_values_are_checked_and_typed() -> None:
    options = parse(
        "--port", "9000", "--udp", "0", "--rate", "2.5", "--interface", "127.0.0.1",
        "--interface", "0:0::1", "--loud", "--host-name", "chat.example",
    )  # fmt: skip
    assert (options["port"], options["udp"], options["rate"]) == (9000, 0, 2.5)
    assert options["interface"] == ["127.0.0.1", "::1"]
    assert options["loud"] is True and options["host-name"] == "chat.example"


def test_the_config_file_with_the_command_line_winning(tmp_path: Path) -> None:
    path = config_file(
        tmp_path, 'port = 9000\nrate = 5\ninterface = ["10.0.0.1"]\nloud = true\nhost_name = "a.example"\n'
    )
    from_file = parse("--config", path)
    assert (from_file["port"], from_file["rate"], from_file["interface"]) == (9000, 5.0, ["10.0.0.1"])
    assert from_file["loud"] is True and from_file["host-name"] == "a.example"
    both = parse("--config", path, "--rate", "7.5", "--interface", "10.0.0.2", "--interface", "10.0.0.3")
    assert (both["rate"], both["port"]) == (7.5, 9000)
    assert both["interface"] == ["10.0.0.2", "10.0.0.3"]  # the command line's list replaces the file's


def test_a_single_value_for_a_repeatable_setting(tmp_path: Path) -> None:
    assert parse("--config", config_file(tmp_path, 'interface = "10.0.0.1"'))["interface"] == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = [", "not valid TOML"),
        ("colour = 1\nsize = 2\nport = 1", "unknown options: colour, size"),
        ("rate = true", "--rate: invalid value True .*boolean"),
        ("loud = 1", "--loud: invalid value 1 .*true or false"),
        ('interface = ["10.0.0.1", "home"]', "--interface: invalid value 'home'"),
        ("port = 0", "--port: invalid value 0"),
        ("burst = 0", "--burst must be at least 1, not 0"),
        ('name = ""', "--name: invalid value ''"),
        ("loud = true", "--loud needs --host-name"),
    ],
)
def test_bad_config_files(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse("--config", config_file(tmp_path, toml))


def test_an_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read config file .*missing\.toml"):
        parse("--config", str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "fast"], "--rate: invalid value 'fast'"),
        (["--rate", "0.01"], "--rate must be at least 0.1"),
        (["--udp", "70000"], "--udp: invalid value '70000' .*1-65535"),
        (["--listen", "nonsense:1"], "--listen: invalid value 'nonsense:1' .*not a server endpoint"),
        (["--interface", "fe80::1"], "--interface: invalid value 'fe80::1' .*link-local"),
    ],
)
def test_bad_command_lines(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*args)


def test_help_shows_defaults_and_repeatable_options() -> None:
    help_text = " ".join(str(ExampleOptions()).split())
    assert "--port= where to listen [default: 8080]" in help_text
    assert "--host-name= a host name [default: the one each client asked for]" in help_text
    assert "--interface= an address to answer on (repeatable)" in help_text
    assert "--loud say more" in help_text
    assert "--config= TOML file" in help_text


@pytest.mark.parametrize(
    ("setting", "raw", "value"),
    [
        (HOST, None, None),
        (NAME, "x", "x"),
        (PORT, "65535", 65535),
        (PORT, 1, 1),
        (UDP, "0", 0),
        (RATE, 3, 3.0),
        (INTERFACE, "::ffff:10.0.0.1", ["::ffff:a00:1"]),
        (INTERFACE, ["10.0.0.1", "::1"], ["10.0.0.1", "::1"]),
        (LOUD, False, False),
        (LISTEN, "tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        (LISTEN, "unix:/run/vchat.sock", "unix:/run/vchat.sock"),
    ],
)
def test_coerce(setting: Setting, raw: Any, value: Any) -> None:
    assert setting.coerce(raw) == value


@pytest.mark.parametrize(
    ("setting", "raw"),
    [
        (NAME, None),
        (NAME, 5),
        (PORT, "port"),
        (PORT, None),
        (PORT, 65536),
        (PORT, True),
        (UDP, -1),
        (RATE, [1]),
        (LISTEN, ""),
        (LISTEN, "tcp"),
        (LISTEN, "tcp:port"),
        (INTERFACE, [None]),
        (INTERFACE, "fe80::1%eth0"),
        (LOUD, "yes"),
        (LOUD, None),
    ],
)
def test_coerce_refuses(setting: Setting, raw: Any) -> None:
    with pytest.raises(UsageError, match=f"--{setting.name}"):
        setting.coerce(raw)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (text, ""),
        (text, 1),
        (port, 0),
        (port, "80x"),
        (port_or_zero, 65536),
        (ip_address, "localhost"),
        (integer, "2.5"),
        (number, "nan"),
        (number, float("inf")),
    ],
)
def test_kinds_raise_value_error(kind: Any, raw: Any) -> None:
    with pytest.raises(ValueError):
        kind(raw)


def test_an_ssl_endpoint_without_its_key_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--listen"):
        LISTEN.coerce(f"ssl:8443:privateKey={tmp_path / 'missing.pem'}")


@pytest.mark.parametrize(("setting", "raw"), [(PORT, 8080.5), (UDP, 3478.9), (BURST, 2.9)])
def test_fractions_are_refused_where_integers_belong(setting: Setting, raw: float) -> None:
    with pytest.raises(UsageError):
        setting.coerce(raw)


class TabledOptions(ExampleOptions):
    """Options whose config file may hold `[extra.NAME]` tables besides settings."""

    tables = ("extra",)


def test_a_named_table_is_handed_on(tmp_path: Path) -> None:
    options = TabledOptions()
    options.parseOptions(["--config", config_file(tmp_path, 'port = 8081\n[extra.one]\nkey = "value"\n')])
    assert options["port"] == 8081
    assert options.config_tables == {"extra": {"one": {"key": "value"}}}
    plain = TabledOptions()
    plain.parseOptions([])
    assert plain.config_tables == {}


def test_a_named_table_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"extra must be a table"):
        TabledOptions().parseOptions(["--config", config_file(tmp_path, "extra = 3\n")])
    with pytest.raises(UsageError, match="unknown options: other"):
        TabledOptions().parseOptions(["--config", config_file(tmp_path, "[other.one]\n")])

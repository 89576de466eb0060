"""Service plugins: the example plugin of docs/services.md found as a Twisted plugin, run with `--service`,
stopped and started through ServiceControl; unknown, repeated and forbidden names."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

import twisted.plugins
from vchat.services import (
    IServicePlugin,
    ServiceContext,
    ServiceControl,
    ServiceInfo,
    ServiceTree,
    find_service_plugins,
    service_from_plugin,
)
from vchat.tap import Options
from vchat.testing import start_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODULE = "vchat_test_disk_space"


def example_plugin() -> str:
    """The example plugin's source: the one Python block of docs/services.md."""
    [source] = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "services.md").read_text(), flags=re.S)
    return str(source)


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin in a `twisted/plugins/` directory of its own, on the plugin path as if installed."""
    directory = tmp_path / "twisted" / "plugins"
    directory.mkdir(parents=True)
    (directory / f"{EXAMPLE_MODULE}.py").write_text(example_plugin())
    monkeypatch.setattr(twisted.plugins, "__path__", [*twisted.plugins.__path__, str(directory)])
    yield
    sys.modules.pop(f"twisted.plugins.{EXAMPLE_MODULE}", None)


def free_space_logged(events: list[LogEvent], data_dir: str) -> int:
    """How many times the example plugin has logged the free space of `data_dir`'s disk."""
    return sum(
        event.get("log_namespace") == "disk-space"
        and formatEvent(event).endswith(f"of the disk holding {data_dir} is free")
        for event in events
    )


def test_the_example_is_found_as_a_plugin(example: None) -> None:
    plugin = find_service_plugins()["disk-space"]
    verifyObject(IPlugin, plugin)
    verifyObject(IServicePlugin, plugin)


@pytest_twisted.ensureDeferred
async def test_a_plugin_runs_with_service_and_is_stopped_and_started(example: None) -> None:
    with capturedLogs() as captured:
        events = cast(list[LogEvent], captured)
        running = await start_server(reactor, "--admin", "none", "--service", "disk-space")
        try:
            control = ServiceControl(cast(ServiceTree, running.service))
            assert control.services()[-1] == ServiceInfo("disk-space", "plugin", running=True, stoppable=True)
            assert free_space_logged(events, running.data_dir) == 1  # at once, then every minute

            assert not (await control.stop("disk-space")).running
            assert not running.service.getServiceNamed("disk-space").running
            assert (await control.start("disk-space")).running
            assert free_space_logged(events, running.data_dir) == 2
        finally:
            await running.stop()


def test_an_unknown_service_is_a_usage_error_listing_the_plugins(example: None) -> None:
    with pytest.raises(
        UsageError,
        match=r"--service: no service plugin 'disk-spaces' \(available: .*disk-space \(logs the free space",
    ):
        Options().parseOptions(["--service", "disk-spaces"])


def test_a_service_given_twice_is_a_usage_error(example: None) -> None:
    with pytest.raises(UsageError, match="--service: disk-space is given twice"):
        Options().parseOptions(["--service", "disk-space", "--service", "disk-space"])


NAMED_PLUGINS = """
from twisted.application.service import Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from vchat.services import IServicePlugin


@implementer(IPlugin, IServicePlugin)
class Named:
    description = "does nothing"

    def __init__(self, name):
        self.name = name

    def makeService(self, context):
        return Service()


allowed = Named("relay-2")
built_in = Named("stun")
spaced = Named("Disk Space")
"""


def test_names_that_are_not_allowed_are_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_vchat_services"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "acme_named.py").write_text(NAMED_PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = importlib.import_module("acme_vchat_services")

    assert list(find_service_plugins(plugins)) == ["relay-2"]
    context = ServiceContext(cast(Any, reactor), str(tmp_path), moderation=cast(Any, None))
    assert service_from_plugin("relay-2", context, plugins).name == "relay-2"
    with pytest.raises(ValueError, match=r"no service plugin 'stun' \(available: relay-2 \(does nothing\)\)"):
        service_from_plugin("stun", context, plugins)

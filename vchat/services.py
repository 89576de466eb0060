"""The process's services by name: an operator stops and starts them at runtime (`ServiceControl`, which the
admin API calls), and services of other packages join them as Twisted plugins (`IServicePlugin`, run with
`twistd vchat --service NAME`). docs/services.md documents both, with an example plugin."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, Literal

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface import Attribute, Interface

from vchat.listener import StartupGuard
from vchat.moderation.service import ModerationService
from vchat.reactors import IServerReactor

# vchat's own services, whose names no plugin may take.
BUILT_IN_NAMES = frozenset(
    {"open-files-limit", "store", "moderation", "moderation-webhook", "geoip", "signaling", "stun", "admin"}
)
# The services the process cannot do without, and why: an operator may neither stop nor start them.
PROTECTED: Mapping[str, str] = MappingProxyType(
    {
        "open-files-limit": "it raises the open-files limit once, as the process starts",
        "store": "every other service keeps its records in it",
        "moderation": "signaling asks it about bans at every hello",
        "admin": "it serves the admin API",
        "cluster": "signaling matches and relays through it, and the store is in the same Redis",
    }
)
_PLUGIN_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_log = Logger()


@dataclass(frozen=True)
class ServiceContext:
    """What vchat hands a service plugin to build its service with.

    `reactor`: the reactor (time, TCP, UDP, threads); `data_dir`: vchat's data directory (`--data-dir`), where
    a plugin may keep files of its own; `moderation`: the moderation service, whose Python API
    (docs/moderation.md) bans users, lifts bans and resolves reports.
    """

    reactor: IServerReactor
    data_dir: str
    moderation: ModerationService


class IServicePlugin(Interface):
    """A service of another package that `twistd vchat --service NAME` runs in vchat's process.

    Found as a Twisted plugin: an object in a module of a `twisted/plugins/` directory on the Python path that
    provides both `twisted.plugin.IPlugin` and this interface. vchat calls `makeService` once, while it wires
    its services (do asynchronous work in the service's `startService`), names the service `name` and adds it
    after its own, so that it starts last and stops first. An operator may stop and start it at runtime
    through the admin API, so it must start again after a stop; when it has a `whenListening()` method, such a
    start waits for the Deferred it returns and reports its failure.
    """

    name: str = Attribute(
        "The name `--service` takes and the admin API shows: lowercase letters, digits and dashes."
    )
    description: str = Attribute("One line saying what the service does.")

    def makeService(context: ServiceContext) -> IService:
        """The service to run, built with what `context` offers."""


def find_service_plugins(package: ModuleType | None = None) -> dict[str, IServicePlugin]:
    """The service plugins in `package` (default: `twisted.plugins`), by name. A plugin whose name is not
    lowercase letters, digits and dashes, or is one of vchat's own services, is left out with a warning."""
    found: dict[str, IServicePlugin] = {}
    for plugin in getPlugins(IServicePlugin, package):
        name: Any = plugin.name
        if not isinstance(name, str) or not _PLUGIN_NAME.fullmatch(name) or name in BUILT_IN_NAMES:
            _log.warn(
                "service plugin {plugin!r} left out: its name {name!r} is not allowed",
                plugin=plugin,
                name=name,
            )
            continue
        found.setdefault(name, plugin)  # two plugins of one name: the first found wins
    return found


def check_plugin_names(names: Iterable[str], package: ModuleType | None = None) -> None:
    """ValueError, listing the plugins there are, for a name no plugin in `package` has or one given twice."""
    found = find_service_plugins(package)
    seen: set[str] = set()
    for name in names:
        if name not in found:
            raise _unknown(name, found)
        if name in seen:
            raise ValueError(f"{name} is given twice")
        seen.add(name)


def service_from_plugin(name: str, context: ServiceContext, package: ModuleType | None = None) -> IService:
    """The service of the plugin `name` in `package`, named `name`; ValueError for an unknown name."""
    found = find_service_plugins(package)
    plugin = found.get(name)
    if plugin is None:
        raise _unknown(name, found)
    service = plugin.makeService(context)
    service.setName(name)
    return service


def _unknown(name: str, found: Mapping[str, IServicePlugin]) -> ValueError:
    available = "; ".join(f"{known} ({found[known].description})" for known in sorted(found))
    return ValueError(f"no service plugin {name!r} (available: {available or 'none'})")


class ServiceTree(MultiService):
    """The process's root service, whose children `ServiceControl` stops and starts.

    `guard` is the `StartupGuard` whose `failed` the children are given; `plugins` names the children built from
    service plugins. When it stops, it stops only the children still running, since an operator may have
    stopped some already (a service need not bear being stopped twice).
    """

    def __init__(self, guard: StartupGuard) -> None:
        super().__init__()
        self.guard = guard
        self.plugins: set[str] = set()

    def add_plugin(self, service: IService) -> None:
        """Add a service built from a plugin (`service_from_plugin`), after vchat's own."""
        service.setServiceParent(self)
        self.plugins.add(service.name)

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        running = [child for child in reversed(list(self)) if child.running]
        return DeferredList([maybeDeferred(child.stopService) for child in running])


Kind = Literal["built-in", "plugin"]


@dataclass(frozen=True)
class ServiceInfo:
    """One service as the admin API shows it: whether it runs and whether an operator may stop it."""

    name: str
    kind: Kind
    running: bool
    stoppable: bool


class ServiceControlError(Exception):
    """A stop or start `ServiceControl` refuses or cannot carry out; the message is for the operator."""


class UnknownService(ServiceControlError):
    """No service of that name runs in this process."""


class NotStoppable(ServiceControlError):
    """The process cannot do without that service."""


class ServiceFailed(ServiceControlError):
    """The service could not start (a port taken, say) or stop; it is left stopped."""


class ServiceControl:
    """Stops and starts the children of the process's root service by name, for the admin API.

    Once an operator starts a service, a failure to start no longer stops the process (`root.guard`) but fails
    the start with `ServiceFailed`. `protected` maps the names an operator may neither stop nor start to the
    reason. Stops and starts of one service run one after the other.
    """

    _log = Logger()

    def __init__(self, root: ServiceTree, protected: Mapping[str, str] = PROTECTED) -> None:
        self._root = root
        self._protected = protected
        self._locks: dict[str, DeferredLock] = {}

    def services(self) -> list[ServiceInfo]:
        """Every service of the process, in start order."""
        return [self._info(service) for service in self._root]

    def stop(self, name: str) -> Deferred[ServiceInfo]:
        """Stop the service `name` (nothing to do if it is stopped); fires with its info once it has stopped.
        Fails with `UnknownService`, `NotStoppable` or `ServiceFailed`."""
        return self._serially(name, self._stop)

    def start(self, name: str) -> Deferred[ServiceInfo]:
        """Start the service `name` (nothing to do if it runs); fires with its info once it listens, if it is a
        listener. Fails with `UnknownService`, `NotStoppable`, or `ServiceFailed` when it cannot start, after
        stopping it again; the process keeps running."""
        return self._serially(name, self._start)

    def _serially(
        self, name: str, action: Callable[[IService], Coroutine[Any, Any, ServiceInfo]]
    ) -> Deferred[ServiceInfo]:
        try:
            service = self._root.getServiceNamed(name)
        except KeyError:
            known = ", ".join(child.name for child in self._root)
            return fail(UnknownService(f"no service {name!r} (services: {known})"))
        if name in self._protected:
            return fail(NotStoppable(f"{name} cannot be stopped or started: {self._protected[name]}"))
        lock = self._locks.setdefault(name, DeferredLock())
        done: Deferred[ServiceInfo] = lock.run(action, service)
        return done

    async def _stop(self, service: IService) -> ServiceInfo:
        if service.running:
            self._log.info("stopping {name}", name=service.name)
            try:
                await maybeDeferred(service.stopService)
            except Exception as e:
                raise ServiceFailed(f"{service.name} did not stop cleanly: {e}") from e
        return self._info(service)

    async def _start(self, service: IService) -> ServiceInfo:
        if service.running:
            return self._info(service)
        if not self._root.running:
            raise ServiceFailed(f"{service.name} cannot start: vchat is not running")
        self._root.guard.started()
        self._log.info("starting {name}", name=service.name)
        try:
            service.startService()
            await _ready(service)
        except Exception as e:
            self._log.warn("{name} cannot start: {error}", name=service.name, error=e)
            try:
                await maybeDeferred(service.stopService)
            except Exception:
                self._log.failure("stopping {name}, which could not start", name=service.name)
            raise ServiceFailed(f"{service.name} cannot start: {e}") from e
        return self._info(service)

    def _info(self, service: IService) -> ServiceInfo:
        name = service.name
        kind: Kind = "plugin" if name in self._root.plugins else "built-in"
        return ServiceInfo(name, kind, bool(service.running), name not in self._protected)


def _ready(service: IService) -> Deferred[Any]:
    """What a start waits for: the service's `whenListening()` (listeners, plugins) or `whenLoaded()` (GeoIP)."""
    for method in ("whenListening", "whenLoaded"):
        wait = getattr(service, method, None)
        if wait is not None:
            ready: Deferred[Any] = wait()
            return ready
    return succeed(None)

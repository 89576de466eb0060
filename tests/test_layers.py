"""The import graph: pure cores load no Twisted, Autobahn or geoip2, and no module imports a layer above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vchat

PACKAGE = Path(vchat.__file__).parent

PURE_CORES = (
    "vchat.matching",
    "vchat.stun.message",
    "vchat.stun.responder",
    "vchat.stun.limiter",
    "vchat.stun.counters",
    "vchat.protocol.codec",
    "vchat.protocol.messages",
    "vchat.protocol.snapshot",
    "vchat.protocol.counters",
    "vchat.ratelimit",
    "vchat.ice",
    "vchat.addresses",
    "vchat.origins",
    "vchat.bot.visitor",
    "vchat.bot.behaviour",
    "vchat.bot.stats",
    "vchat.bot.fakesdp",
    "vchat.store.records",
    "vchat.moderation.banlist",
    "vchat.moderation.signals",
    "vchat.cluster.wire",
    "vchat.cluster.entries",
    "vchat.redis_address",
    "vchat.store.account_records",
    "vchat.accounts.cookie",
    "vchat.accounts.email",
    "vchat.accounts.age",
)
FORBIDDEN_IN_CORES = ("twisted", "zope", "autobahn", "geoip2")  # not even an interface: plain Python

# Layers from the bottom up: a module may import its own layer and those below, never one above.
# Modules not listed here sit in the layer of their package (`vchat.stun.udp` in "vchat.stun").
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "vchat.protocol.errors",
        "vchat.addresses",
        "vchat.origins",
        "vchat.ratelimit",
        "vchat.outcome",
        "vchat.ice",
        "vchat.rlimit",
        "vchat.reactors",
        "vchat.reuseport",
        "vchat.redis_address",
        "vchat.httpbody",
    ),
    (
        "vchat.matching",
        "vchat.protocol.codec",
        "vchat.protocol.messages",
        "vchat.protocol.snapshot",
        "vchat.options",
        "vchat.failurelog",
        "vchat.cluster.wire",
        "vchat.cluster.entries",
    ),
    (
        "vchat.stun",
        "vchat.geo",
        "vchat.listener",
        "vchat.jsonapi",
        "vchat.store",
        "vchat.redis_connection",
        "vchat.cluster",
        "vchat.moderation.banlist",
        "vchat.moderation.signals",
    ),
    ("vchat.protocol",),
    ("vchat.moderation", "vchat.accounts"),
    (
        "vchat.cluster.matchmaker",
        "vchat.cluster.node",
    ),  # a node's wiring: over the switchboard and moderation
    ("vchat.admin", "vchat.services"),
    ("vchat.bot",),
    ("vchat.tap",),
    ("vchat.testing",),
)


def layer_of(module: str) -> int:
    """The layer of `module`: that of the longest listed name it is, or sits inside."""
    best, rank = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def vchat_imports(path: Path) -> set[str]:
    """The vchat modules `path` imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "vchat" or name.startswith("vchat.")}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_import_reaches_up(path: Path) -> None:
    importer = module_name(path)
    upward = sorted(name for name in vchat_imports(path) if layer_of(name) > layer_of(importer))
    assert not upward, f"{importer} imports layers above it: {upward}"


def test_stun_depends_on_nothing_of_signaling() -> None:
    for path in (PACKAGE / "stun").rglob("*.py"):
        signaling = sorted(
            name
            for name in vchat_imports(path)
            if name.startswith(("vchat.protocol", "vchat.matching", "vchat.geo", "vchat.tap"))
        )
        assert not signaling, f"{module_name(path)} imports {signaling}"


def loaded_after_import(*modules: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing `modules`."""
    script = (
        "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print('\\n'.join(sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_pure_cores_load_no_twisted_autobahn_or_geoip2() -> None:
    loaded = loaded_after_import(*PURE_CORES)
    assert {"vchat.matching", "vchat.stun.responder", "vchat.protocol.messages"} <= loaded
    offending = sorted(name for name in loaded if name.startswith(FORBIDDEN_IN_CORES))
    assert not offending


def test_stun_plugin_loads_no_signaling() -> None:
    loaded = loaded_after_import("vchat.stun.tap")
    assert not sorted(
        name for name in loaded if name.startswith(("vchat.protocol", "vchat.matching", "autobahn", "geoip2"))
    )

"""Installing vchat into a fresh virtual environment, as a contributor and as an operator would.

Each test installs a copy of this checkout with pip, using the environment's pip configuration, and runs the
twistd plugins from there. The copy keeps build output out of the working tree and lets the wheel test remove
the source afterwards, so nothing but the installation can provide the plugins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Not part of the source: version control, virtual environments, caches, build output, run-time data.
NOT_SOURCE = shutil.ignore_patterns(
    ".*", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache", "vchat-data", "twistd.*"
)
# pip downloads and builds here, well beyond the suite's usual per-test limit.
pytestmark = pytest.mark.timeout(600)


class Venv:
    """A virtual environment made for one test module, and the way to run its programs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)

    def run(
        self, program: str, *args: str, cwd: Path, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `program` from the environment's bin/ in `cwd`; fail the test, showing its output, unless it exits 0."""
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
        result = subprocess.run(
            [str(self.bin / program), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{program} {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def site_packages(self) -> Path:
        """The environment's site-packages directory."""
        return Path(
            self.run(
                "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=self.path
            ).stdout.strip()
        )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh virtual environment without vchat or its dependencies."""
    path = tmp_path_factory.mktemp("venv")
    yield Venv(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of this checkout's source tree."""
    copy = tmp_path / "vchat"
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCE)
    return copy


def assert_plugins_run(venv: Venv, cwd: Path) -> None:
    """`twistd vchat --help` and `twistd vchat-stun --help` find their plugins and print their options."""
    for plugin in ("vchat", "vchat-stun"):
        usage = venv.run("twistd", plugin, "--help", cwd=cwd).stdout
        assert f"Usage: twistd [options] {plugin} [options]" in usage


def test_editable_install(venv: Venv, source: Path, tmp_path: Path) -> None:
    # Plain `pip install -e`: setuptools' default editable mode, no --config-settings.
    venv.run("pip", "install", "--editable", str(source), cwd=tmp_path, timeout=300)
    assert_plugins_run(venv, tmp_path)
    # The plugins came from the copy: its twisted/plugins/ is on the plugin path and vchat is imported from it.
    found = venv.run(
        "python",
        "-c",
        "import twisted.plugins, vchat; print(*twisted.plugins.__path__, vchat.__file__, sep='\\n')",
        cwd=tmp_path,
    ).stdout.splitlines()
    assert str(source / "twisted" / "plugins") in found
    assert found[-1] == str(source / "vchat" / "__init__.py")
    # A fresh install can serve ssl: endpoints (twisted[tls]).
    venv.run("python", "-c", "import OpenSSL, service_identity", cwd=tmp_path)


def test_wheel_install(venv: Venv, source: Path, tmp_path: Path) -> None:
    venv.run("pip", "install", str(source), cwd=tmp_path, timeout=300)
    shutil.rmtree(source)  # the installed copy must stand on its own
    assert (venv.site_packages() / "twisted" / "plugins" / "vchat_plugins.py").is_file()
    assert_plugins_run(venv, tmp_path)
    # The moderator page's and the web client's files came along: the services read them when they are built.
    script = (
        "from vchat.admin.service import page_routes; from vchat.protocol.site import web_client_files; "
        "print(len(page_routes()), b'/index.html' in web_client_files(), b'/app.js' in web_client_files())"
    )
    assert venv.run("python", "-c", script, cwd=tmp_path).stdout.split() == ["3", "True", "True"]

"""`twistd vchat-stun`: only the STUN responder, with the same `--stun-*` options as `twistd vchat`."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python import usage

from vchat.listener import StartupGuard
from vchat.options import SettingsOptions
from vchat.reactors import IStunReactor, installed_reactor
from vchat.rlimit import OpenFilesLimitService
from vchat.stun.config import STUN_SETTINGS, StunConfig, stun_config
from vchat.stun.service import StunService


class Options(SettingsOptions):
    """Options of `twistd vchat-stun`; `--config FILE` supplies the same keys and the command line wins."""

    settings = STUN_SETTINGS

    def check(self) -> None:
        self.stun: StunConfig = stun_config(self)
        if self.stun.udp_port is None and self.stun.tcp_endpoint is None:
            raise usage.UsageError("nothing to serve: --stun-udp is 0 and there is no --stun-tcp")


def makeService(options: Options, reactor: IStunReactor | None = None) -> MultiService:
    """The service tree: the open-files limit, then the STUN service ("stun"), which stops the process if
    it cannot listen."""
    running = reactor if reactor is not None else installed_reactor()
    guard = StartupGuard(running, exit_status=reactor is None)  # under twistd, a failed start exits with 1
    root = MultiService()
    OpenFilesLimitService().setServiceParent(root)
    StunService(running, options.stun, on_failure=guard.failed).setServiceParent(root)
    return root

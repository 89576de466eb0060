"""`twistd vchat-stun`: only the STUN responder, with the same `--stun-*` options as `twistd vchat`."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from vchat.options import SettingsOptions
from vchat.service import stop_running
from vchat.stun.config import STUN_SETTINGS, StunConfig, stun_config
from vchat.stun.service import make_stun_service


class Options(SettingsOptions):
    """Options of `twistd vchat-stun`; `--config FILE` supplies the same keys and the command line wins."""

    settings = STUN_SETTINGS

    def check(self) -> None:
        self.config: StunConfig = stun_config(self)
        if self.config.udp_port is None and self.config.tcp_endpoint is None:
            raise usage.UsageError("nothing to serve: --stun-udp is 0 and there is no --stun-tcp")


def makeService(options: Options, reactor: Any = None) -> IService:
    """The STUN service for `options`; it listens when started, and stops the process if it cannot."""
    if reactor is None:
        from twisted.internet import reactor
    return make_stun_service(options.config, reactor, on_failure=lambda: stop_running(reactor))

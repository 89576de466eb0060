"""The reactor interfaces vchat's services use, combined: type hints cannot intersect zope interfaces."""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorThreads, IReactorTime, IReactorUDP


class IStunReactor(IReactorCore, IReactorTime, IReactorUDP, IReactorTCP):
    """What the STUN service needs: time, UDP and TCP listeners, and stopping the process."""


class IServerReactor(IStunReactor, IReactorThreads):
    """What `twistd vchat` needs: the STUN service's, and a thread pool for blocking reads."""


def installed_reactor() -> IServerReactor:
    """The global reactor that twistd installed: only the taps default to it."""
    from twisted.internet import reactor

    return cast(IServerReactor, reactor)

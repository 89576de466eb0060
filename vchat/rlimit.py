"""The open-files limit a busy server or load generator needs: each connection is a file."""

from __future__ import annotations

import resource

from twisted.application.service import Service
from twisted.logger import Logger


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


class OpenFilesLimitService(Service):
    """Raises the open-files limit once per process, when the process starts (before any listener)."""

    _log = Logger()

    def __init__(self) -> None:
        self.setName("open-files-limit")
        self.limit: int | None = None

    def startService(self) -> None:
        super().startService()
        self.limit = raise_open_files_limit()
        self._log.info("open files limit {limit}", limit=self.limit)
